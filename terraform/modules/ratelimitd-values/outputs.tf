output "fullname" {
  description = "Prefix of the chart's object names (Deployment, Service, ...)."
  value       = local.fullname
}

output "values" {
  description = "Non-secret chart values (a map; yamlencode it for helm_release)."
  value       = local.values
}

output "values_yaml" {
  description = "yamlencode(values)."
  value       = yamlencode(local.values)
}

output "secret_values_yaml" {
  description = "yamlencode of the secret chart values (key hash secret, API keys)."
  value       = yamlencode(local.secret_values)
  sensitive   = true
}

output "memcached_fullname" {
  description = "Name of the chart's memcached StatefulSet (and headless Service) for this release."
  value       = local.memcached_fullname
}

output "service" {
  description = "In-cluster host:port of the ratelimitd Service (HTTP/1.1 and h2c), from release_name, namespace, cluster_domain and service_port."
  value       = local.service
}

output "memcached_servers" {
  description = "The memcached nodes ratelimitd will use, as host:port."
  value       = local.memcached_servers
}

output "termination_grace_period_seconds" {
  description = "What the chart renders: preStop 5 s + ceil(shutdown_grace_ms/1000) + 5 s."
  value       = local.termination_grace_period_seconds
}
