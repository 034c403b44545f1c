output "release_name" {
  description = "Name of the Helm release."
  value       = helm_release.ratelimitd.name
}

output "namespace" {
  description = "Namespace of the Helm release."
  value       = helm_release.ratelimitd.namespace
}

output "service" {
  description = "In-cluster host:port of the ratelimitd Service (HTTP/1.1 and h2c)."
  value       = module.values.service
}

output "memcached_servers" {
  description = "The memcached nodes ratelimitd uses, host:port, in ring order."
  value       = module.values.memcached_servers
}
