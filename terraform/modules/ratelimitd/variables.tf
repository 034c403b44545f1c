# Installs helm/ratelimitd. Every input is passed to ../ratelimitd-values, which validates it
# (those validation blocks are tested offline with `terraform test`) and turns it into chart
# values; the chart's values.schema.json checks them once more when Helm installs.

variable "chart_path" {
  description = "Path to the helm/ratelimitd chart; null = the chart in this repository."
  type        = string
  default     = null
}

variable "create_namespace" {
  description = "Let Helm create the namespace."
  type        = bool
  default     = true
}

variable "release_name" {
  description = "Helm release name (DNS-1123 label, at most 40 characters; at most 31 unless it contains \"ratelimitd\")."
  type        = string
  default     = "ratelimitd"
}

variable "namespace" {
  description = "Kubernetes namespace of the release."
  type        = string
  default     = "ratelimitd"
}

variable "image" {
  description = "ratelimitd image built from the repository's Dockerfile: repository and tag."
  type = object({
    repository = string
    tag        = string
  })
  default = { repository = "ratelimitd", tag = "0.1.0" }
}

variable "replicas" {
  description = "HPA bounds { min, max }; min == max gives a fixed replica count without HPA."
  type = object({
    min = number
    max = number
  })
  default = { min = 3, max = 20 }
}

variable "cpu_target_percent" {
  description = "HPA average CPU utilisation target (10-100)."
  type        = number
  default     = 70
}

variable "resources" {
  description = "ratelimitd container resources."
  type = object({
    cpu_request    = string
    memory_request = string
    memory_limit   = string
  })
  # memory_limit: room for the chart's server.max_connections (2000) unfinished request heads,
  # 2000 x 460 KiB + 32 MiB = 930 MiB (docs/DEPLOY.md).
  default = { cpu_request = "250m", memory_request = "64Mi", memory_limit = "1Gi" }
}

variable "default_limit" {
  description = "Requests per second for API keys not listed in api_keys."
  type        = number
  default     = 10
}

variable "tiers" {
  description = "Tier name -> requests per second (\"default\" is taken: it is the default limit's policy name)."
  type        = map(number)
  default     = {}
}

variable "api_keys" {
  description = "API key -> tier name. Secret (stored in the release's config Secret and in the Terraform state)."
  type        = map(string)
  default     = {}
  sensitive   = true
}

variable "unknown_keys" {
  description = "allow: unlisted keys get default_limit; reject: they get 403."
  type        = string
  default     = "allow"
}

variable "key_hash_secret" {
  description = "Keys the hash of API keys in memcached; the same on every pod, at least 16 characters. Secret. Leave null with existing_config_secret (then it is not in the state)."
  type        = string
  default     = null
  sensitive   = true
}

variable "existing_config_secret" {
  description = "Name of a Secret you manage (External Secrets, sealed-secrets) holding the complete ratelimitd.yaml under the key ratelimitd.yaml; empty = the chart renders the config from these variables."
  type        = string
  default     = ""
}

variable "memcached_servers" {
  description = "External memcached nodes host:port[:weight] (e.g. ElastiCache node endpoints); empty = the chart's own memcached StatefulSet."
  type        = list(string)
  default     = []
}

variable "in_cluster_memcached_port" {
  description = "Port of the chart's memcached nodes (when memcached_servers is empty)."
  type        = number
  default     = 11211
}

variable "service_port" {
  description = "ratelimitd's cleartext port (HTTP/1.1 and h2c), Service and container (1024-65535)."
  type        = number
  default     = 8080
}

variable "listen_addresses" {
  description = "Addresses the daemon listens on: [\"0.0.0.0\"] (IPv4), [\"::\"] on an IPv6 EKS cluster, both for dual-stack."
  type        = list(string)
  default     = ["0.0.0.0"]
}

variable "cluster_domain" {
  description = "The cluster's DNS domain, for the in-cluster names in the outputs and the chart's memcached node names."
  type        = string
  default     = "cluster.local"
}

variable "in_cluster_memcached_replicas" {
  description = "Nodes of the chart's memcached StatefulSet (when memcached_servers is empty)."
  type        = number
  default     = 3
}

variable "on_failure" {
  description = "When memcached does not answer: open (admit) or closed (503)."
  type        = string
  default     = "open"
}

variable "backend_timeout_ms" {
  description = "How long a decision waits for memcached (1-1000 ms: counters live 3 s, and a later count could start its window over)."
  type        = number
  default     = 20
}

variable "shutdown_grace_ms" {
  description = "Longest drain after SIGTERM (0-600000 ms); the pods' termination grace period follows it."
  type        = number
  default     = 5000
}

variable "tls_secret_name" {
  description = "kubernetes.io/tls Secret for the HTTPS (h2 via ALPN) listener; empty = no TLS listener."
  type        = string
  default     = ""
}

variable "network_policy" {
  description = "NetworkPolicy letting only ratelimitd pods reach the chart's memcached (ignored with external memcached)."
  type        = bool
  default     = true
}

variable "service_monitor" {
  description = "Render a Prometheus Operator ServiceMonitor (needs its CRDs)."
  type        = bool
  default     = false
}

variable "extra_values" {
  description = "More chart values (a map in helm/ratelimitd/values.yaml's shape), merged last."
  type        = any
  default     = {}
}

variable "timeout_seconds" {
  description = "How long Helm waits for the release to become ready before rolling back."
  type        = number
  default     = 600
}
