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

output "memcached_servers" {
  description = "The memcached nodes ratelimitd will use, as host:port."
  value       = local.memcached_servers
}

output "termination_grace_period_seconds" {
  description = "What the chart renders: preStop 5 s + ceil(shutdown_grace_ms/1000) + 5 s."
  value       = local.termination_grace_period_seconds
}
