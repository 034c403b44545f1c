variable "region" {
  description = "AWS region of the EKS cluster, e.g. us-east-1."
  type        = string
  validation {
    condition     = can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]$", var.region))
    error_message = "region must look like us-east-1."
  }
}

variable "cluster_name" {
  description = "Name of the existing EKS cluster to install ratelimitd into."
  type        = string
  validation {
    condition     = can(regex("^[0-9A-Za-z][A-Za-z0-9_-]{0,99}$", var.cluster_name))
    error_message = "cluster_name must be a valid EKS cluster name."
  }
}

variable "name" {
  description = "ElastiCache cluster id and prefix of the related resources (subnet group, security group)."
  type        = string
  default     = "ratelimitd"
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,38}[a-z0-9]$", var.name)) && !strcontains(var.name, "--")
    error_message = "name: lower-case letters, digits and single hyphens, 2-40 characters, starting with a letter."
  }
}

variable "cache_subnet_ids" {
  description = "Private subnets of the cluster's VPC, in at least two AZs, for the memcached nodes."
  type        = list(string)
  validation {
    condition     = length(var.cache_subnet_ids) >= 2 && alltrue([for s in var.cache_subnet_ids : can(regex("^subnet-[0-9a-f]{8,17}$", s))])
    error_message = "cache_subnet_ids: at least two subnet-... ids, in different AZs."
  }
}

variable "availability_zones" {
  description = "AZs to spread the memcached nodes over (round-robin, one preferred AZ per node); must match the subnets."
  type        = list(string)
  validation {
    condition     = length(var.availability_zones) >= 2 && length(distinct(var.availability_zones)) == length(var.availability_zones)
    error_message = "availability_zones: at least two distinct zones (cross-AZ)."
  }
}

variable "node_security_group_ids" {
  description = "Security groups of the EKS worker nodes allowed to reach memcached; empty = the cluster security group (what EKS managed node groups use)."
  type        = list(string)
  default     = []
  validation {
    condition     = alltrue([for s in var.node_security_group_ids : can(regex("^sg-[0-9a-f]{8,17}$", s))])
    error_message = "node_security_group_ids: sg-... ids."
  }
}

variable "cache_node_type" {
  description = "ElastiCache node type; memcached uses about 100 bytes per active key and second."
  type        = string
  default     = "cache.t4g.small"
  validation {
    condition     = startswith(var.cache_node_type, "cache.")
    error_message = "cache_node_type must be an ElastiCache node type (cache.*)."
  }
}

variable "cache_nodes" {
  description = "Number of memcached nodes (the ketama ring); losing one moves about 1/N of the keys."
  type        = number
  default     = 3
  validation {
    condition     = var.cache_nodes >= 2 && var.cache_nodes <= 40 && floor(var.cache_nodes) == var.cache_nodes
    error_message = "cache_nodes must be a whole number in 2..40 (cross-AZ needs at least 2)."
  }
}

variable "memcached_version" {
  description = "ElastiCache memcached engine version (1.6.x: ratelimitd uses the meta protocol)."
  type        = string
  default     = "1.6.22"
  validation {
    condition     = can(regex("^1\\.6\\.[0-9]+$", var.memcached_version))
    error_message = "memcached_version must be 1.6.x."
  }
}

variable "maintenance_window" {
  description = "Weekly ElastiCache maintenance window (UTC)."
  type        = string
  default     = "sun:05:00-sun:06:00"
}

variable "release_name" {
  description = "Helm release name."
  type        = string
  default     = "ratelimitd"
}

variable "namespace" {
  description = "Kubernetes namespace (created if missing)."
  type        = string
  default     = "ratelimitd"
}

variable "image" {
  description = "The ratelimitd image built from the repository's Dockerfile and pushed to your registry (e.g. ECR)."
  type = object({
    repository = string
    tag        = string
  })
}

variable "replicas" {
  description = "HPA bounds for the ratelimitd pods (min == max: fixed count, no HPA)."
  type = object({
    min = number
    max = number
  })
  default = { min = 3, max = 20 }
}

variable "default_limit" {
  description = "Requests per second for keys not listed in api_keys."
  type        = number
  default     = 10
}

variable "tiers" {
  description = "Tier name -> requests per second."
  type        = map(number)
  default     = { free = 10, premium = 100 }
}

variable "api_keys" {
  description = "API key -> tier. Secret: it ends up in the Helm release (a Kubernetes Secret) and in the Terraform state; prefer TF_VAR_api_keys from a secret store."
  type        = map(string)
  default     = {}
  sensitive   = true
}

variable "unknown_keys" {
  description = "allow: unlisted keys get default_limit; reject: 403."
  type        = string
  default     = "allow"
}

variable "on_failure" {
  description = "When memcached does not answer: open (admit) or closed (503)."
  type        = string
  default     = "open"
}

variable "key_hash_secret" {
  description = "Keys the hash of API keys stored in memcached (openssl rand -hex 32). Secret: pass it as TF_VAR_key_hash_secret; it is stored in the Terraform state (the helm provider needs it)."
  type        = string
  sensitive   = true
}

variable "service_monitor" {
  description = "Create a Prometheus Operator ServiceMonitor (needs its CRDs in the cluster)."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags for the AWS resources."
  type        = map(string)
  default     = {}
}
