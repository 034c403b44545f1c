# Provider-free on purpose: everything here is checked offline with
# `terraform init -backend=false && terraform validate && terraform test`.
terraform {
  required_version = ">= 1.9.0"
}
