# ratelimitd on an existing EKS cluster, counting in an ElastiCache memcached cluster whose
# nodes are spread across availability zones. See variables.tf and terraform.tfvars.example.

provider "aws" {
  region = var.region
}

data "aws_eks_cluster" "this" {
  name = var.cluster_name
}

# Credentials come from `aws eks get-token` at run time (the AWS CLI must be installed), so no
# cluster token is written to the Terraform state.
provider "kubernetes" {
  host                   = data.aws_eks_cluster.this.endpoint
  cluster_ca_certificate = base64decode(data.aws_eks_cluster.this.certificate_authority[0].data)
  exec {
    api_version = "client.authentication.k8s.io/v1beta1"
    command     = "aws"
    args        = ["eks", "get-token", "--cluster-name", var.cluster_name, "--region", var.region]
  }
}

provider "helm" {
  kubernetes {
    host                   = data.aws_eks_cluster.this.endpoint
    cluster_ca_certificate = base64decode(data.aws_eks_cluster.this.certificate_authority[0].data)
    exec {
      api_version = "client.authentication.k8s.io/v1beta1"
      command     = "aws"
      args        = ["eks", "get-token", "--cluster-name", var.cluster_name, "--region", var.region]
    }
  }
}

locals {
  vpc_id = data.aws_eks_cluster.this.vpc_config[0].vpc_id
  # Who may reach memcached: the node security groups given, or else the cluster security
  # group EKS attaches to managed node groups (and to pods without their own security group).
  client_security_group_ids = length(var.node_security_group_ids) > 0 ? toset(var.node_security_group_ids) : toset([data.aws_eks_cluster.this.vpc_config[0].cluster_security_group_id])
  # One preferred AZ per node, round-robin, so the ring survives the loss of a zone.
  preferred_azs = [for i in range(var.cache_nodes) : var.availability_zones[i % length(var.availability_zones)]]
}

resource "aws_elasticache_subnet_group" "memcached" {
  name        = "${var.name}-memcached"
  description = "ratelimitd memcached nodes"
  subnet_ids  = var.cache_subnet_ids
}

resource "aws_security_group" "memcached" {
  name        = "${var.name}-memcached"
  description = "memcached for ratelimitd: 11211 from the EKS nodes only"
  vpc_id      = local.vpc_id
  tags        = var.tags
}

resource "aws_vpc_security_group_ingress_rule" "memcached_from_nodes" {
  for_each = local.client_security_group_ids

  security_group_id            = aws_security_group.memcached.id
  description                  = "memcached from the EKS nodes"
  ip_protocol                  = "tcp"
  from_port                    = 11211
  to_port                      = 11211
  referenced_security_group_id = each.value
}
# No egress rule: memcached only answers.

resource "aws_elasticache_cluster" "memcached" {
  cluster_id                   = var.name
  engine                       = "memcached"
  engine_version               = var.memcached_version
  node_type                    = var.cache_node_type
  num_cache_nodes              = var.cache_nodes
  az_mode                      = "cross-az"
  preferred_availability_zones = local.preferred_azs
  port                         = 11211
  parameter_group_name         = "default.memcached1.6"
  subnet_group_name            = aws_elasticache_subnet_group.memcached.name
  security_group_ids           = [aws_security_group.memcached.id]
  # ratelimitd speaks plain memcached (no TLS to the backend): traffic stays inside the VPC,
  # limited by the security group above.
  transit_encryption_enabled = false
  maintenance_window         = var.maintenance_window
  apply_immediately          = false
  tags                       = var.tags
}

module "ratelimitd" {
  source = "../../modules/ratelimitd"

  release_name     = var.release_name
  namespace        = var.namespace
  create_namespace = true
  image            = var.image
  replicas         = var.replicas
  default_limit    = var.default_limit
  tiers            = var.tiers
  api_keys         = var.api_keys
  unknown_keys     = var.unknown_keys
  key_hash_secret  = var.key_hash_secret
  on_failure       = var.on_failure
  # Every node by its own endpoint, in node-id order: ratelimitd's ketama ring needs the
  # individual nodes (not the configuration endpoint), the same list on every pod.
  memcached_servers = [for n in aws_elasticache_cluster.memcached.cache_nodes : "${n.address}:${n.port}"]
  network_policy    = false
  service_monitor   = var.service_monitor
}
