output "memcached_nodes" {
  description = "The ElastiCache node endpoints (host:port) ratelimitd hashes keys onto, in ring order."
  value       = module.ratelimitd.memcached_servers
}

output "memcached_configuration_endpoint" {
  description = "ElastiCache configuration endpoint (for tools; ratelimitd uses the individual nodes)."
  value       = aws_elasticache_cluster.memcached.configuration_endpoint
}

output "memcached_security_group_id" {
  description = "Security group of the memcached nodes."
  value       = aws_security_group.memcached.id
}

output "ratelimitd_endpoint" {
  description = "In-cluster URL of ratelimitd (HTTP/1.1 and h2c): POST/GET /limit with the API key header."
  value       = "http://${module.ratelimitd.service}/limit"
}

output "release" {
  description = "namespace/name of the Helm release (helm test -n NAMESPACE NAME)."
  value       = "${module.ratelimitd.namespace}/${module.ratelimitd.release_name}"
}
