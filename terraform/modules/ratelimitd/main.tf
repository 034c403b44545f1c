module "values" {
  source = "../ratelimitd-values"

  release_name                  = var.release_name
  namespace                     = var.namespace
  image                         = var.image
  replicas                      = var.replicas
  cpu_target_percent            = var.cpu_target_percent
  resources                     = var.resources
  default_limit                 = var.default_limit
  tiers                         = var.tiers
  api_keys                      = var.api_keys
  unknown_keys                  = var.unknown_keys
  key_hash_secret               = var.key_hash_secret
  existing_config_secret        = var.existing_config_secret
  memcached_servers             = var.memcached_servers
  in_cluster_memcached_replicas = var.in_cluster_memcached_replicas
  in_cluster_memcached_port     = var.in_cluster_memcached_port
  service_port                  = var.service_port
  listen_addresses              = var.listen_addresses
  cluster_domain                = var.cluster_domain
  on_failure                    = var.on_failure
  backend_timeout_ms            = var.backend_timeout_ms
  shutdown_grace_ms             = var.shutdown_grace_ms
  tls_secret_name               = var.tls_secret_name
  network_policy                = var.network_policy
  service_monitor               = var.service_monitor
}

resource "helm_release" "ratelimitd" {
  name             = var.release_name
  namespace        = var.namespace
  create_namespace = var.create_namespace
  chart            = coalesce(var.chart_path, "${path.module}/../../../helm/ratelimitd")

  # The chart's values.schema.json validates these again at plan/apply time. extra_values must
  # not override service.port, clusterDomain or memcached.port: the outputs are derived from
  # the variables of the same meaning.
  values = [
    module.values.values_yaml,
    module.values.secret_values_yaml,
    yamlencode(var.extra_values),
  ]

  atomic          = true
  cleanup_on_fail = true
  wait            = true
  timeout         = var.timeout_seconds
}
