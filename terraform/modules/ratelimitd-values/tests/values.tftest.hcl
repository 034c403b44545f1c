# Offline: `terraform init -backend=false && terraform test` (no providers involved).

variables {
  key_hash_secret = "0123456789abcdef0123"
}

run "defaults_use_in_cluster_memcached" {
  command = plan

  assert {
    condition     = output.values.memcached.enabled == true && length(output.values.externalMemcached.servers) == 0
    error_message = "with no memcached_servers the chart's StatefulSet must be enabled"
  }
  assert {
    condition     = output.memcached_servers[0] == "ratelimitd-memcached-0.ratelimitd.svc.cluster.local:11211" && length(output.memcached_servers) == 3
    error_message = "in-cluster memcached names must be the chart's per-node Service names"
  }
  assert {
    condition     = output.service == "ratelimitd.ratelimitd.svc.cluster.local:8080"
    error_message = "the Service address follows the chart's defaults"
  }
  assert {
    condition     = output.values.autoscaling.enabled == true && output.values.autoscaling.minReplicas == 3
    error_message = "HPA on by default"
  }
  assert {
    condition     = output.values.networkPolicy.enabled == true
    error_message = "NetworkPolicy on by default with in-cluster memcached"
  }
  assert {
    condition     = output.termination_grace_period_seconds == 15
    error_message = "5000 ms grace -> 5 + 5 + 5 s"
  }
  assert {
    condition     = !strcontains(output.values_yaml, "0123456789abcdef0123")
    error_message = "the non-secret values must not contain the key hash secret"
  }
  assert {
    condition     = strcontains(nonsensitive(output.secret_values_yaml), "key_hash_secret")
    error_message = "the secret values carry config.backend.key_hash_secret"
  }
}

run "external_memcached_and_fixed_replicas" {
  command = plan
  variables {
    release_name      = "edge"
    namespace         = "gateway"
    replicas          = { min = 4, max = 4 }
    memcached_servers = ["cache-0001.abc.use1.cache.amazonaws.com:11211", "cache-0002.abc.use1.cache.amazonaws.com:11211"]
    tiers             = { free = 10, premium = 100 }
    api_keys          = { "k-1" = "premium" }
    on_failure        = "closed"
    shutdown_grace_ms = 12500
  }

  assert {
    condition     = output.values.memcached.enabled == false && length(output.values.externalMemcached.servers) == 2
    error_message = "external servers switch the StatefulSet off"
  }
  assert {
    condition     = output.values.autoscaling.enabled == false && output.values.replicaCount == 4
    error_message = "min == max turns the HPA off and fixes replicaCount"
  }
  assert {
    condition     = output.values.networkPolicy.enabled == false
    error_message = "no NetworkPolicy without in-cluster memcached"
  }
  assert {
    condition     = output.fullname == "edge-ratelimitd"
    error_message = "fullname follows the chart's naming"
  }
  assert {
    condition     = output.termination_grace_period_seconds == 23
    error_message = "12500 ms -> 5 + 13 + 5"
  }
}

run "rejects_bad_on_failure" {
  command = plan
  variables {
    on_failure = "maybe"
  }
  expect_failures = [var.on_failure]
}

run "rejects_a_timeout_longer_than_counters_live" {
  command = plan
  variables {
    backend_timeout_ms = 1500
  }
  expect_failures = [var.backend_timeout_ms]
}

run "rejects_a_tier_named_default" {
  command = plan
  variables {
    tiers = { default = 5 }
  }
  expect_failures = [var.tiers]
}

run "rejects_min_above_max" {
  command = plan
  variables {
    replicas = { min = 5, max = 2 }
  }
  expect_failures = [var.replicas]
}

run "rejects_short_hash_secret" {
  command = plan
  variables {
    key_hash_secret = "short"
  }
  expect_failures = [var.key_hash_secret]
}

run "rejects_key_with_unknown_tier" {
  command = plan
  variables {
    tiers    = { free = 10 }
    api_keys = { "k-1" = "gold" }
  }
  expect_failures = [var.api_keys]
}

run "rejects_bad_memcached_server" {
  command = plan
  variables {
    memcached_servers = ["not a host"]
  }
  expect_failures = [var.memcached_servers]
}

run "rejects_bad_release_name" {
  command = plan
  variables {
    release_name = "Rate_Limiter"
  }
  expect_failures = [var.release_name]
}

run "warns_on_single_replica" {
  command = plan
  variables {
    replicas = { min = 1, max = 1 }
  }
  expect_failures = [check.replicas_survive_a_disruption]
}

run "long_release_name_keeps_memcached_within_52" {
  command = plan
  variables {
    release_name = "a-release-name-of-31-characters"
  }

  assert {
    condition     = output.fullname == "a-release-name-of-31-characters-ratelimitd" && length(output.fullname) == 42
    error_message = "31 characters + -ratelimitd = 42"
  }
  assert {
    condition     = output.memcached_fullname == "a-release-name-of-31-characters-ratelimitd-memcached" && length(output.memcached_fullname) == 52
    error_message = "the StatefulSet name is the whole fullname + -memcached, 52 characters"
  }
  assert {
    condition     = startswith(output.memcached_servers[2], "${output.memcached_fullname}-2.ratelimitd.svc.")
    error_message = "the servers name the StatefulSet's per-node Services"
  }
}

run "release_name_with_ratelimitd_may_be_40" {
  command = plan
  variables {
    release_name = "edge-ratelimitd-a-forty-character-name-x"
  }

  assert {
    condition     = output.fullname == "edge-ratelimitd-a-forty-character-name-x" && length(output.memcached_fullname) == 50
    error_message = "a name containing ratelimitd is the fullname itself"
  }
}

run "rejects_release_name_over_31_without_ratelimitd" {
  command = plan
  variables {
    release_name = "release-name-of-32-characters-xy"
  }
  expect_failures = [var.release_name]
}

run "derived_addresses_follow_domain_and_ports" {
  command = plan
  variables {
    namespace                 = "gateway"
    cluster_domain            = "corp.example"
    service_port              = 9080
    in_cluster_memcached_port = 11311
  }

  assert {
    condition     = output.service == "ratelimitd.gateway.svc.corp.example:9080"
    error_message = "the Service address uses cluster_domain and service_port"
  }
  assert {
    condition     = output.memcached_servers[0] == "ratelimitd-memcached-0.gateway.svc.corp.example:11311"
    error_message = "the memcached nodes use cluster_domain and in_cluster_memcached_port"
  }
  assert {
    condition     = output.values.clusterDomain == "corp.example" && output.values.service.port == 9080 && output.values.memcached.port == 11311
    error_message = "the chart gets the same domain and ports"
  }
}

run "existing_config_secret_needs_no_key_hash_secret" {
  command = plan
  variables {
    key_hash_secret        = null
    existing_config_secret = "ratelimitd-config"
  }

  assert {
    condition     = output.values.existingConfigSecret == "ratelimitd-config"
    error_message = "the chart is told to mount the existing Secret"
  }
  assert {
    condition     = !strcontains(nonsensitive(output.secret_values_yaml), "key_hash_secret") && !strcontains(nonsensitive(output.secret_values_yaml), "keys")
    error_message = "nothing secret reaches the chart values (or the state)"
  }
}

run "rejects_missing_key_hash_secret_without_existing_secret" {
  command = plan
  variables {
    key_hash_secret = null
  }
  expect_failures = [var.key_hash_secret]
}

run "rejects_key_hash_secret_with_existing_secret" {
  command = plan
  variables {
    existing_config_secret = "ratelimitd-config"
  }
  expect_failures = [var.key_hash_secret]
}

run "rejects_api_keys_with_existing_secret" {
  command = plan
  variables {
    key_hash_secret        = null
    existing_config_secret = "ratelimitd-config"
    tiers                  = { free = 10 }
    api_keys               = { "k-1" = "free" }
  }
  expect_failures = [var.api_keys]
}

run "rejects_memcached_port_0" {
  command = plan
  variables {
    memcached_servers = ["cache-0001.example:0"]
  }
  expect_failures = [var.memcached_servers]
}

run "rejects_memcached_weight_1001" {
  command = plan
  variables {
    memcached_servers = ["cache-0001.example:11211:1001"]
  }
  expect_failures = [var.memcached_servers]
}

run "accepts_memcached_port_65535_weight_1000" {
  command = plan
  variables {
    memcached_servers = ["cache-0001.example:65535:1000", "cache-0002.example:1"]
  }

  assert {
    condition     = length(output.memcached_servers) == 2
    error_message = "the daemon's limits are accepted"
  }
}
