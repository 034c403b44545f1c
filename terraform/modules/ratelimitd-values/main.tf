locals {
  fullname          = strcontains(var.release_name, "ratelimitd") ? var.release_name : "${var.release_name}-ratelimitd"
  external_memcache = length(var.memcached_servers) > 0
  autoscaling       = var.replicas.min < var.replicas.max

  # Values for the helm/ratelimitd chart (helm/ratelimitd/values.yaml), without secrets, so
  # they are safe to show in plans. `config` uses the daemon's own field names.
  values = {
    image = {
      repository = var.image.repository
      tag        = var.image.tag
    }
    existingConfigSecret = var.existing_config_secret
    clusterDomain        = var.cluster_domain
    service              = { port = var.service_port }
    listenAddresses      = var.listen_addresses
    replicaCount         = var.replicas.min
    autoscaling = {
      enabled                        = local.autoscaling
      minReplicas                    = var.replicas.min
      maxReplicas                    = var.replicas.max
      targetCPUUtilizationPercentage = var.cpu_target_percent
    }
    config = {
      limits = {
        default      = var.default_limit
        tiers        = var.tiers
        unknown_keys = var.unknown_keys
      }
      backend = {
        type       = "memcached"
        timeout_ms = var.backend_timeout_ms
        on_failure = var.on_failure
      }
      shutdown_grace_ms = var.shutdown_grace_ms
    }
    memcached = {
      enabled  = !local.external_memcache
      replicas = var.in_cluster_memcached_replicas
      port     = var.in_cluster_memcached_port
    }
    externalMemcached = {
      servers = var.memcached_servers
    }
    tls = {
      enabled    = var.tls_secret_name != ""
      secretName = var.tls_secret_name
    }
    networkPolicy = {
      enabled = var.network_policy && !local.external_memcache
    }
    metrics = {
      serviceMonitor = { enabled = var.service_monitor }
    }
    resources = {
      requests = { cpu = var.resources.cpu_request, memory = var.resources.memory_request }
      limits   = { memory = var.resources.memory_limit }
    }
    podDisruptionBudget = {
      enabled        = true
      maxUnavailable = 1
    }
  }

  # The secret part, merged by Helm on top of `values` (the chart then keeps the whole config
  # in a Secret). Only what is set: with existing_config_secret there is nothing secret here.
  # (jsondecode of strings: a conditional's two sides must have one type.)
  secret_values = {
    config = merge(
      jsondecode(var.key_hash_secret == null ? "{}" : jsonencode({ backend = { key_hash_secret = var.key_hash_secret } })),
      jsondecode(length(var.api_keys) == 0 ? "{}" : jsonencode({ limits = { keys = var.api_keys } })),
    )
  }

  # What the pods will be able to reach: the chart's StatefulSet names or the external list.
  # The chart's memcached fullname: "<fullname truncated to 42>-memcached" (<= 52 characters, a
  # StatefulSet's limit; release_name's validation keeps fullname within 42, so nothing is cut);
  # by default each node sits behind its own ClusterIP Service "<that>-N" (memcached.addressing
  # = service). Domain and port are the chart values set above.
  memcached_fullname = "${trimsuffix(substr(local.fullname, 0, 42), "-")}-memcached"
  memcached_servers = local.external_memcache ? var.memcached_servers : [
    for i in range(var.in_cluster_memcached_replicas) :
    "${local.memcached_fullname}-${i}.${var.namespace}.svc.${var.cluster_domain}:${var.in_cluster_memcached_port}"
  ]
  # The ratelimitd Service, as the chart names it, on the service.port set above.
  service = "${local.fullname}.${var.namespace}.svc.${var.cluster_domain}:${var.service_port}"
  # The chart's default: preStop sleep 5 s + ceil(shutdown_grace_ms / 1000) + 5 s margin.
  termination_grace_period_seconds = 5 + ceil(var.shutdown_grace_ms / 1000) + 5
}

# Warnings (not errors) for choices that work but are risky in production.
check "replicas_survive_a_disruption" {
  assert {
    condition     = var.replicas.min >= 2
    error_message = "replicas.min < 2: a node drain or a PDB-respecting eviction leaves no ratelimitd pod."
  }
}

check "memcached_pool_has_redundancy" {
  assert {
    condition     = length(local.memcached_servers) >= 2
    error_message = "a single memcached node: losing it sends every decision to on_failure."
  }
}

check "fail_closed_needs_tight_timeout" {
  assert {
    condition     = var.on_failure == "open" || var.backend_timeout_ms <= 100
    error_message = "on_failure=closed with backend_timeout_ms > 100: callers wait long for a 503 while memcached is away."
  }
}
