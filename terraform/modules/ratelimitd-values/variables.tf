variable "release_name" {
  description = "Helm release name; also the prefix of every Kubernetes object name (<release>-ratelimitd unless it contains \"ratelimitd\")."
  type        = string
  default     = "ratelimitd"
  validation {
    # The chart's object names are <release>-ratelimitd (or the release name when it contains
    # "ratelimitd"); at most 42 characters keep the memcached StatefulSet, <that>-memcached,
    # within the 52 a StatefulSet may have, with no truncation.
    condition     = can(regex("^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$", var.release_name)) && length(strcontains(var.release_name, "ratelimitd") ? var.release_name : "${var.release_name}-ratelimitd") <= 42
    error_message = "release_name must be a DNS-1123 label of at most 40 characters, and at most 31 unless it contains \"ratelimitd\" (object names <release>-ratelimitd-memcached must stay within 52 characters)."
  }
}

variable "namespace" {
  description = "Kubernetes namespace of the release."
  type        = string
  default     = "ratelimitd"
  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.namespace))
    error_message = "namespace must be a DNS-1123 label."
  }
}

variable "image" {
  description = "ratelimitd image (built from the repository's Dockerfile)."
  type = object({
    repository = string
    tag        = string
  })
  default = { repository = "ratelimitd", tag = "0.1.0" }
  validation {
    condition     = length(var.image.repository) > 0 && can(regex("^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", var.image.tag))
    error_message = "image.repository must be set and image.tag must be a valid Docker tag."
  }
}

variable "replicas" {
  description = "Pod count bounds for the HorizontalPodAutoscaler (min == max turns the HPA off)."
  type = object({
    min = number
    max = number
  })
  default = { min = 3, max = 20 }
  validation {
    condition     = var.replicas.min >= 1 && var.replicas.max <= 1000 && var.replicas.min <= var.replicas.max && floor(var.replicas.min) == var.replicas.min && floor(var.replicas.max) == var.replicas.max
    error_message = "replicas: whole numbers with 1 <= min <= max <= 1000."
  }
}

variable "cpu_target_percent" {
  description = "HPA average CPU utilisation target."
  type        = number
  default     = 70
  validation {
    condition     = var.cpu_target_percent >= 10 && var.cpu_target_percent <= 100
    error_message = "cpu_target_percent must be between 10 and 100."
  }
}

variable "default_limit" {
  description = "Requests per second for any API key not listed in api_keys."
  type        = number
  default     = 10
  validation {
    condition     = var.default_limit >= 1 && var.default_limit <= 1000000000 && floor(var.default_limit) == var.default_limit
    error_message = "default_limit must be a whole number in 1..1000000000."
  }
}

variable "tiers" {
  description = "Tier name -> requests per second (\"default\" is taken: it is the default limit's policy name)."
  type        = map(number)
  default     = {}
  validation {
    condition     = alltrue([for k, v in var.tiers : can(regex("^[A-Za-z0-9_.-]{1,64}$", k)) && k != "default" && v >= 1 && v <= 1000000000 && floor(v) == v])
    error_message = "tiers: names [A-Za-z0-9_.-]{1,64} other than \"default\" (the default limit's policy name), limits whole numbers in 1..1000000000."
  }
}

variable "api_keys" {
  description = "API key -> tier name (secret: rendered into the chart's config Secret)."
  type        = map(string)
  default     = {}
  sensitive   = true
  validation {
    condition     = alltrue([for k, t in var.api_keys : can(regex("^[\\x21-\\x7e]{1,256}$", k)) && contains(keys(var.tiers), t)])
    error_message = "api_keys: keys are 1-256 printable ASCII bytes without spaces, and every tier must exist in var.tiers."
  }
  validation {
    condition     = var.existing_config_secret == "" || length(var.api_keys) == 0
    error_message = "api_keys must be empty with existing_config_secret: the Secret's file lists the keys (the chart would ignore these)."
  }
}

variable "unknown_keys" {
  description = "allow: unlisted keys get default_limit; reject: 403."
  type        = string
  default     = "allow"
  validation {
    condition     = contains(["allow", "reject"], var.unknown_keys)
    error_message = "unknown_keys must be allow or reject."
  }
}

variable "key_hash_secret" {
  description = "Keys the hash of API keys in memcached; identical on every pod, at least 16 characters. Leave null with existing_config_secret (its file holds it), so it is not in the state."
  type        = string
  default     = null
  sensitive   = true
  validation {
    condition     = var.existing_config_secret == "" ? length(var.key_hash_secret == null ? "" : var.key_hash_secret) >= 16 : var.key_hash_secret == null
    error_message = "key_hash_secret must be at least 16 characters; with existing_config_secret leave it null (the Secret's file holds it, the chart would ignore it)."
  }
}

variable "existing_config_secret" {
  description = "Name of a Secret you manage holding the complete ratelimitd.yaml (key ratelimitd.yaml); keeps key_hash_secret and API keys out of the state. Empty = the chart renders the config."
  type        = string
  default     = ""
  validation {
    condition     = var.existing_config_secret == "" || can(regex("^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$", var.existing_config_secret))
    error_message = "existing_config_secret must be empty or a Kubernetes object name."
  }
}

variable "memcached_servers" {
  description = "External memcached nodes as host:port[:weight] (e.g. ElastiCache); empty = the chart's own memcached StatefulSet."
  type        = list(string)
  default     = []
  validation {
    # As the daemon reads them: port 1-65535, weight 1-1000, no leading zeros.
    condition     = alltrue([for s in var.memcached_servers : can(regex("^[A-Za-z0-9_.-]{1,253}:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])(:([1-9][0-9]{0,2}|1000))?$", s))]) && length(distinct(var.memcached_servers)) == length(var.memcached_servers)
    error_message = "memcached_servers: distinct host:port[:weight] strings (port 1-65535, weight 1-1000)."
  }
}

variable "in_cluster_memcached_port" {
  description = "Port of the chart's memcached nodes (chart value memcached.port)."
  type        = number
  default     = 11211
  validation {
    condition     = var.in_cluster_memcached_port >= 1024 && var.in_cluster_memcached_port <= 65535 && floor(var.in_cluster_memcached_port) == var.in_cluster_memcached_port
    error_message = "in_cluster_memcached_port must be a whole number in 1024..65535 (memcached runs as a non-root user with every capability dropped)."
  }
}

variable "listen_addresses" {
  description = "Addresses the daemon listens on (chart value listenAddresses): [\"0.0.0.0\"] serves IPv4 only, since its IPv6 sockets are IPv6-only; [\"::\"] for an IPv6 EKS cluster, both for dual-stack."
  type        = list(string)
  default     = ["0.0.0.0"]
  validation {
    condition     = length(var.listen_addresses) >= 1 && length(var.listen_addresses) <= 8 && length(distinct(var.listen_addresses)) == length(var.listen_addresses)
    error_message = "listen_addresses: 1 to 8 distinct addresses."
  }
}

variable "service_port" {
  description = "ratelimitd's cleartext port (HTTP/1.1 and h2c): the Service's and the container's (chart value service.port)."
  type        = number
  default     = 8080
  validation {
    condition     = var.service_port >= 1024 && var.service_port <= 65535 && floor(var.service_port) == var.service_port
    error_message = "service_port must be a whole number in 1024..65535 (the non-root container binds it)."
  }
}

variable "cluster_domain" {
  description = "The cluster's DNS domain, for the in-cluster names (chart value clusterDomain)."
  type        = string
  default     = "cluster.local"
  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", var.cluster_domain))
    error_message = "cluster_domain must be a DNS name such as cluster.local."
  }
}

variable "in_cluster_memcached_replicas" {
  description = "Replicas of the chart's memcached StatefulSet (used when memcached_servers is empty)."
  type        = number
  default     = 3
  validation {
    condition     = var.in_cluster_memcached_replicas >= 1 && var.in_cluster_memcached_replicas <= 64
    error_message = "in_cluster_memcached_replicas must be in 1..64."
  }
}

variable "on_failure" {
  description = "open: admit when memcached fails; closed: answer 503."
  type        = string
  default     = "open"
  validation {
    condition     = contains(["open", "closed"], var.on_failure)
    error_message = "on_failure must be open or closed."
  }
}

variable "backend_timeout_ms" {
  description = "Per-increment memcached deadline."
  type        = number
  default     = 20
  validation {
    # The chart keeps window_ttl_s at 3 s, and the daemon refuses a timeout_ms above
    # (window_ttl_s - 2) x 1000: a later count could start its window over.
    condition     = var.backend_timeout_ms >= 1 && var.backend_timeout_ms <= 1000
    error_message = "backend_timeout_ms must be in 1..1000 (counters live 3 s; a later count could start its window over)."
  }
}

variable "shutdown_grace_ms" {
  description = "Longest drain after SIGTERM."
  type        = number
  default     = 5000
  validation {
    condition     = var.shutdown_grace_ms >= 0 && var.shutdown_grace_ms <= 600000
    error_message = "shutdown_grace_ms must be in 0..600000."
  }
}

variable "tls_secret_name" {
  description = "kubernetes.io/tls Secret for the HTTPS listener; empty = no TLS listener."
  type        = string
  default     = ""
}

variable "network_policy" {
  description = "Restrict the chart's memcached to ratelimitd pods."
  type        = bool
  default     = true
}

variable "service_monitor" {
  description = "Render a Prometheus Operator ServiceMonitor (needs its CRDs)."
  type        = bool
  default     = false
}

variable "resources" {
  description = "ratelimitd container resources."
  type = object({
    cpu_request    = string
    memory_request = string
    memory_limit   = string
  })
  # memory_limit: the chart's server.max_connections (2000) x 460 KiB per unfinished request
  # head + 32 MiB = 930 MiB (docs/DEPLOY.md, sizing ratelimitd's memory).
  default = { cpu_request = "250m", memory_request = "64Mi", memory_limit = "1Gi" }
}
