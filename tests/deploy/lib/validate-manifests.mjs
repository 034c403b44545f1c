// Validates `helm template` output offline and checks the chart's invariants.
//
//   node validate-manifests.mjs RENDERED.yaml [--config-out FILE] [--expect-hpa present|absent]
//        [--expect-netpol present|absent] [--expect-tls on|off] [--expect-servicemonitor present|absent]
//        [--expect-pdb present|absent] [--expect-config external --config-secret NAME]
//        [--expect-readiness /healthz|/readyz]   (default: from the rendered config's on_failure)
//
// Needs RL_NODE_MODULES = a node_modules dir holding kubernetes-models@5.1.0, yaml@2 and
// @prometheus-io/lezer-promql (scripts/deploy-tools installs them). PromQL in the alert rules and
// the dashboard is parsed with Prometheus's own grammar (the one its web UI uses), which also knows
// the function names; no Prometheus runs here, so label names and values are not checked.
// Prints every ratelimitd_* metric name the rules and dashboard use as "uses-metric=<name>", for
// the caller to compare with a real daemon's /metrics. Prints one line per check; exits 1 on any failure.
// Prints "checksum=<sha256>" (the Deployment's checksum/config annotation) for the caller.
import fs from 'node:fs';
import path from 'node:path';

const modules = process.env.RL_NODE_MODULES;
if (!modules) {
    console.error('RL_NODE_MODULES is not set');
    process.exit(2);
}
const YAML = await import(path.join(modules, 'yaml/dist/index.js'));
const { parser: promql } = await import(path.join(modules, '@prometheus-io/lezer-promql/dist/index.es.js'));

const args = process.argv.slice(2);
const file = args.shift();
const opts = {};
while (args.length) {
    const k = args.shift();
    if (!k.startsWith('--') || !args.length) {
        console.error(`bad argument ${k}`);
        process.exit(2);
    }
    opts[k.slice(2)] = args.shift();
}

let failures = 0;
const fail = (msg) => { failures++; console.log(`  FAIL ${msg}`); };
const ok = (msg) => console.log(`  ok   ${msg}`);
const check = (cond, msg) => (cond ? ok(msg) : fail(msg));

// APIs removed from Kubernetes (or never to be used by this chart).
const DENY = [
    /^policy\/v1beta1$/, /^autoscaling\/v2beta\d$/, /^autoscaling\/v1$/, /^extensions\/v1beta1$/,
    /^apps\/v1beta\d$/, /^networking\.k8s\.io\/v1beta1$/, /^batch\/v1beta1$/,
    /^rbac\.authorization\.k8s\.io\/v1beta1$/, /^monitoring\.coreos\.com\/v1alpha1$/,
];

const docs = YAML.parseAllDocuments(fs.readFileSync(file, 'utf8'));
const objs = [];
for (const d of docs) {
    if (d.errors.length) {
        fail(`YAML: ${d.errors[0].message}`);
        continue;
    }
    const o = d.toJS();
    if (o !== null && o !== undefined) objs.push(o);
}
console.log(`${file}: ${objs.length} objects`);

function checkServiceMonitor(o, id) {
    const s = o.spec;
    const problems = [];
    if (!o.metadata?.name) problems.push('metadata.name');
    if (!s || typeof s !== 'object') problems.push('spec');
    else {
        if (!s.selector || typeof s.selector !== 'object') problems.push('spec.selector');
        if (!Array.isArray(s.endpoints) || s.endpoints.length === 0) problems.push('spec.endpoints');
        for (const e of s.endpoints || []) {
            if (typeof e.port !== 'string') problems.push('endpoints[].port (a named port)');
            if (e.path !== undefined && typeof e.path !== 'string') problems.push('endpoints[].path');
            for (const k of ['interval', 'scrapeTimeout'])
                if (e[k] !== undefined && !/^\d+(ms|s|m|h)$/.test(e[k])) problems.push(`endpoints[].${k}`);
            const allowed = ['port', 'path', 'scheme', 'interval', 'scrapeTimeout', 'honorLabels', 'relabelings', 'metricRelabelings', 'tlsConfig'];
            for (const k of Object.keys(e)) if (!allowed.includes(k)) problems.push(`endpoints[].${k} unknown`);
        }
    }
    check(problems.length === 0, `${id} structural check${problems.length ? ': ' + problems.join(', ') : ''}`);
}

// Offset of the first syntax error in a PromQL expression, or -1.
function promqlError(expr) {
    let at = -1;
    promql.parse(expr).iterate({ enter: (n) => { if (n.type.isError && at < 0) at = n.from; } });
    return at;
}

const usedMetrics = new Set();
function checkPromql(expr, where) {
    const at = typeof expr === 'string' ? promqlError(expr) : 0;
    check(at < 0, `${where}: PromQL parses${at < 0 ? '' : ` (error at ${at} of ${JSON.stringify(expr)})`}`);
    for (const m of String(expr).matchAll(/\bratelimitd_[a-z0-9_]+/g)) usedMetrics.add(m[0]);
}

function checkPrometheusRule(o, id) {
    const problems = [];
    const groups = o.spec?.groups;
    if (!Array.isArray(groups) || groups.length === 0) problems.push('spec.groups');
    for (const g of groups || []) {
        if (typeof g.name !== 'string' || !g.name) problems.push('groups[].name');
        if (!Array.isArray(g.rules) || g.rules.length === 0) problems.push(`group ${g.name}: rules`);
        for (const r of g.rules || []) {
            if (typeof r.alert !== 'string' || !/^[A-Za-z_][A-Za-z0-9_]*$/.test(r.alert)) problems.push(`rule ${r.alert}: alert name`);
            if (r.for !== undefined && !/^\d+(ms|s|m|h)$/.test(r.for)) problems.push(`rule ${r.alert}: for`);
            for (const k of Object.keys(r)) if (!['alert', 'expr', 'for', 'labels', 'annotations'].includes(k)) problems.push(`rule ${r.alert}: ${k} unknown`);
            checkPromql(r.expr, `${id} ${r.alert}`);
        }
    }
    check(problems.length === 0, `${id} structural check${problems.length ? ': ' + problems.join(', ') : ''}`);
}

for (const o of objs) {
    const id = `${o.apiVersion}/${o.kind} ${o.metadata?.name}`;
    if (typeof o.apiVersion !== 'string' || typeof o.kind !== 'string') {
        fail(`object without apiVersion/kind: ${JSON.stringify(o).slice(0, 80)}`);
        continue;
    }
    if (DENY.some((re) => re.test(o.apiVersion))) {
        fail(`${id}: apiVersion ${o.apiVersion} is removed/denied`);
        continue;
    }
    if (o.apiVersion === 'monitoring.coreos.com/v1' && o.kind === 'ServiceMonitor') {
        checkServiceMonitor(o, id);
        continue;
    }
    if (o.apiVersion === 'monitoring.coreos.com/v1' && o.kind === 'PrometheusRule') {
        checkPrometheusRule(o, id);
        continue;
    }
    const modPath = path.join(modules, 'kubernetes-models', o.apiVersion, 'index.js');
    let Cls;
    try {
        Cls = (await import(modPath))[o.kind];
    } catch {
        Cls = undefined;
    }
    if (!Cls) {
        fail(`${id}: unknown apiVersion/kind`);
        continue;
    }
    try {
        new Cls(o).validate();
        ok(`${id} schema`);
    } catch (e) {
        fail(`${id} schema: ${String(e.message).split('\n').slice(0, 4).join(' | ')}`);
    }
}

// ---- chart invariants ----
const by = (kind) => objs.filter((o) => o.kind === kind);

// Name lengths the API server accepts but that break later: a StatefulSet's pods carry
// controller-revision-hash = "<name>-<10-character hash>" (a label value, <= 63), so a name over
// 52 characters gets no pods; Service names are DNS-1035 labels (<= 63).
for (const o of by('StatefulSet'))
    check(o.metadata.name.length <= 52, `StatefulSet ${o.metadata.name} name is ${o.metadata.name.length} <= 52 characters (its pods' controller-revision-hash label must fit 63)`);
const longSvc = by('Service').filter((o) => o.metadata.name.length > 63).map((o) => o.metadata.name);
check(longSvc.length === 0, `Service names <= 63 characters${longSvc.length ? ': ' + longSvc.join(', ') : ''}`);

// Kubernetes memory quantity -> bytes (undefined when absent or unparsable).
function bytes(q) {
    if (q === undefined || q === null) return undefined;
    const m = /^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E|m)?$/.exec(String(q));
    if (!m) return undefined;
    const mult = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50, Ei: 2 ** 60, k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, E: 1e18, m: 1e-3 };
    return Number(m[1]) * (m[2] ? mult[m[2]] : 1);
}
const spreadHonorsTaints = (spec) => (spec.topologySpreadConstraints || []).every((t) => t.nodeTaintsPolicy === 'Honor');
const deps = by('Deployment');
check(deps.length === 1, 'exactly one Deployment');
const dep = deps[0];
const cfgHolders = objs.filter((o) => (o.kind === 'Secret' || o.kind === 'ConfigMap') &&
    ((o.data && 'ratelimitd.yaml' in o.data) || (o.stringData && 'ratelimitd.yaml' in o.stringData)));
const externalConfig = opts['expect-config'] === 'external';
if (externalConfig) check(cfgHolders.length === 0, 'no rendered config (existingConfigSecret is used)');
else check(cfgHolders.length === 1, 'exactly one ConfigMap/Secret with ratelimitd.yaml');
let cfgText = '';
let cfg = {};
if (cfgHolders.length === 1) {
    const h = cfgHolders[0];
    cfgText = h.stringData?.['ratelimitd.yaml'] ??
        (h.kind === 'Secret' ? Buffer.from(h.data['ratelimitd.yaml'], 'base64').toString('utf8') : h.data['ratelimitd.yaml']);
    cfg = YAML.parse(cfgText) || {};
    if (opts['config-out']) fs.writeFileSync(opts['config-out'], cfgText);
    check(h.kind === 'Secret' || !(cfg.backend?.key_hash_secret || Object.keys(cfg.limits?.keys || {}).length),
        `${h.kind} ${h.metadata.name} holds the config (secrets only in a Secret)`);
}

if (dep) {
    const pod = dep.spec.template.spec;
    const ctr = pod.containers.find((c) => c.name === 'ratelimitd') || pod.containers[0];
    const psc = pod.securityContext || {};
    const csc = ctr.securityContext || {};
    check(psc.runAsNonRoot === true && psc.runAsUser === 10001, 'pod runAsNonRoot, runAsUser 10001');
    check(psc.seccompProfile?.type === 'RuntimeDefault', 'pod seccompProfile RuntimeDefault');
    check(csc.readOnlyRootFilesystem === true, 'container readOnlyRootFilesystem');
    check(csc.allowPrivilegeEscalation === false, 'container allowPrivilegeEscalation false');
    check(JSON.stringify(csc.capabilities?.drop) === '["ALL"]', 'container capabilities drop ALL');
    check(csc.runAsNonRoot === true && csc.runAsUser === 10001, 'container runAsNonRoot, runAsUser 10001');

    const grace = cfg.shutdown_grace_ms ?? 5000;
    const tgps = pod.terminationGracePeriodSeconds;
    let preStop = 0;
    const cmd = ctr.lifecycle?.preStop?.exec?.command;
    if (cmd && cmd[0] === 'sleep') preStop = Number(cmd[1]);
    check(Number.isInteger(tgps) && tgps > grace / 1000 + preStop,
        `terminationGracePeriodSeconds ${tgps} > shutdown_grace_ms/1000 (${grace / 1000}) + preStop sleep (${preStop})`);

    const ports = Object.fromEntries((ctr.ports || []).map((p) => [p.name, p.containerPort]));
    if (!externalConfig) check(ports.http === cfg.listen?.[0]?.port, `container port http = config listen port ${cfg.listen?.[0]?.port}`);
    // the admin listener (admin.enabled): probes must get in while clients hold every API connection
    const adminListen = (cfg.listen || []).find((l) => l.role === 'admin');
    const opsPort = 'admin' in ports ? 'admin' : 'http';
    if (!externalConfig) check(adminListen ? ports.admin === adminListen.port : !('admin' in ports), `container port admin = config admin listener port ${adminListen?.port ?? '(none)'}`);
    check(ctr.livenessProbe?.httpGet?.path === '/healthz' && ctr.livenessProbe.httpGet.port === opsPort, `liveness probe GET /healthz on port ${opsPort}`);
    // /readyz is 503 while no memcached node answers: with on_failure open (the daemon's
    // default) the pods still answer 200 then and must stay in the Service.
    const onFailure = cfg.backend?.on_failure ?? 'open';
    const wantReady = opts['expect-readiness'] ?? (onFailure === 'closed' ? '/readyz' : '/healthz');
    check(ctr.readinessProbe?.httpGet?.path === wantReady && ctr.readinessProbe.httpGet.port === opsPort,
        `readiness probe GET ${wantReady} on port ${opsPort} (on_failure ${externalConfig ? 'in the existing Secret' : onFailure}; got ${ctr.readinessProbe?.httpGet?.path})`);
    // DEPLOY.md: an unfinished HTTP/1.1 head holds about 460 KiB until idle_timeout_ms; keep
    // (max_connections + 64 admin connections) x 460 KiB + 32 MiB, plus the local store's table (1.5 slots of 32 bytes
    // per local_max_keys, all of it touched in time), under the memory limit.
    if (externalConfig) ok('memory rule not checked: server.max_connections is in the existing Secret');
    else {
        const conns = cfg.server?.max_connections ?? 10000;
        const localKeys = cfg.backend?.type === 'memcached' ? 0 : (cfg.backend?.local_max_keys ?? 1048576);
        // the admin listener's 64 connections (RL_ADMIN_MAX_CONNECTIONS) can hold heads too
        const adminConns = (cfg.listen || []).some((l) => l.role === 'admin') ? 64 : 0;
        const need = (conns + adminConns) * 460 * 1024 + 32 * 2 ** 20 + localKeys * 48;
        const limit = bytes(ctr.resources?.limits?.memory);
        const table = localKeys ? ` + local_max_keys ${localKeys} x 48 B` : '';
        check(limit !== undefined && need <= limit,
            `memory: (server.max_connections ${conns} + admin ${adminConns}) x 460 KiB + 32 MiB${table} = ${Math.ceil(need / 2 ** 20)} MiB <= limits.memory ${ctr.resources?.limits?.memory} (${limit === undefined ? '?' : Math.floor(limit / 2 ** 20)} MiB)`);
    }
    // The local store counts per pod: a surge pod next to the old one would double the limit.
    const strategy = dep.spec.strategy || {};
    if (cfg.backend?.type === 'local')
        check(strategy.type === 'Recreate' || (strategy.rollingUpdate?.maxSurge === 0 && strategy.type === 'RollingUpdate'),
            `local backend: no surge pod during updates (strategy ${strategy.type})`);
    else if (!externalConfig || strategy.type === 'RollingUpdate')
        check(strategy.type === 'RollingUpdate' && strategy.rollingUpdate?.maxUnavailable === 0,
            `shared backend: rolling updates with maxUnavailable 0 (strategy ${strategy.type})`);
    check(ctr.resources?.requests?.cpu !== undefined, 'cpu request set (the HPA needs it)');
    const sum = dep.spec.template.metadata?.annotations?.['checksum/config'];
    check(/^[0-9a-f]{64}$/.test(sum || ''), 'checksum/config annotation is a sha256');
    if (sum) console.log(`checksum=${sum}`);
    const keys = (pod.topologySpreadConstraints || []).map((t) => t.topologyKey).sort();
    check(JSON.stringify(keys) === '["kubernetes.io/hostname","topology.kubernetes.io/zone"]', 'topologySpreadConstraints over zone and hostname');
    check(keys.length > 0 && spreadHonorsTaints(pod), 'topologySpreadConstraints skip nodes whose taints the pods do not tolerate (nodeTaintsPolicy Honor)');
    const cfgVol = (pod.volumes || []).find((v) => v.name === 'config');
    if (externalConfig) check(cfgVol && cfgVol.secret?.secretName === opts['config-secret'], `config volume mounts the Secret ${opts['config-secret']}`);
    else check(cfgVol && (cfgVol.secret?.secretName === cfgHolders[0]?.metadata.name || cfgVol.configMap?.name === cfgHolders[0]?.metadata.name),
        'config volume mounts the rendered config');
    const mount = (ctr.volumeMounts || []).find((m) => m.name === 'config');
    const cfgPath = ctr.args?.[ctr.args.indexOf('-c') + 1];
    check(mount && (cfgPath === `${mount.mountPath}/ratelimitd.yaml` ||
        (cfgPath === mount.mountPath && mount.subPath === 'ratelimitd.yaml')) && mount.readOnly === true,
        `daemon reads ${cfgPath} from the (read-only) mounted config`);
    check(dep.spec.template.spec.automountServiceAccountToken === false, 'no service account token in the pod (the daemon needs no API access)');

    const hpas = by('HorizontalPodAutoscaler');
    if (opts['expect-hpa'] === 'absent') {
        check(hpas.length === 0, 'no HorizontalPodAutoscaler');
        check(Number.isInteger(dep.spec.replicas), `Deployment replicas set (${dep.spec.replicas})`);
    } else {
        check(hpas.length === 1 && hpas[0].apiVersion === 'autoscaling/v2', 'one autoscaling/v2 HorizontalPodAutoscaler');
        check(dep.spec.replicas === undefined, 'Deployment replicas left to the HPA');
        if (hpas[0]) {
            check(hpas[0].spec.scaleTargetRef.name === dep.metadata.name, 'HPA targets the Deployment');
            check(hpas[0].spec.metrics.some((m) => m.type === 'Resource' && m.resource.name === 'cpu'), 'HPA has a CPU target');
        }
    }

    const tlsOn = opts['expect-tls'] === 'on';
    const svc = by('Service').find((s) => s.metadata.name === dep.metadata.name);
    check(svc && svc.spec.ports.some((p) => p.name === 'http' && p.targetPort === 'http'), 'Service port http -> http');
    // 64 admin connections per pod are few: never on the client-facing Service (maybe a LoadBalancer)
    check(svc && !svc.spec.ports.some((p) => p.name === 'admin'), 'no admin port on the client-facing Service');
    if ('admin' in ports) {
        const adminSvc = by('Service').find((s) => s !== svc && s.spec.ports.some((p) => p.name === 'admin'));
        check(adminSvc && adminSvc.spec.type === 'ClusterIP' && adminSvc.spec.ports.some((p) => p.name === 'admin' && p.targetPort === 'admin'),
            'ClusterIP Service <name>-admin: port admin -> admin');
    }
    check(!!(svc && svc.spec.ports.some((p) => p.name === 'https')) === tlsOn, `Service https port ${tlsOn ? 'present' : 'absent'}`);
    check(('https' in ports) === tlsOn, `container https port ${tlsOn ? 'present' : 'absent'}`);
    const tlsListen = (cfg.listen || []).find((l) => l.tls);
    if (!externalConfig) check(!!tlsListen === tlsOn, `TLS listener in config ${tlsOn ? 'present' : 'absent'}`);
    if (tlsOn && tlsListen) {
        check(tlsListen.port === ports.https, 'TLS listener port = container https port');
        const tlsMount = (ctr.volumeMounts || []).find((m) => m.name === 'tls');
        check(tlsMount && tlsListen.tls.certificate.startsWith(tlsMount.mountPath + '/') && tlsListen.tls.key.startsWith(tlsMount.mountPath + '/'),
            'certificate and key paths are inside the mounted TLS secret');
    }
}

check(by('PodDisruptionBudget').every((p) => p.apiVersion === 'policy/v1'), 'PDBs are policy/v1');
if (opts['expect-pdb'] === 'absent') check(!by('PodDisruptionBudget').some((p) => p.metadata.name === dep?.metadata.name), 'no ratelimitd PDB');
else check(by('PodDisruptionBudget').some((p) => p.metadata.name === dep?.metadata.name), 'ratelimitd PDB present');

const sts = by('StatefulSet')[0];
if (sts) {
    const hsvc = by('Service').find((s) => s.metadata.name === sts.spec.serviceName);
    check(hsvc && hsvc.spec.clusterIP === 'None', 'memcached Service is headless (clusterIP None)');
    const args = sts.spec.template.spec.containers[0].args.join(' ');
    check(/-m \d+/.test(args) && /-c \d+/.test(args) && /-U 0/.test(args), `memcached args -m -c -U 0 (${args})`);
    check(spreadHonorsTaints(sts.spec.template.spec), 'memcached topologySpreadConstraints: nodeTaintsPolicy Honor');
    check(hsvc && hsvc.spec.publishNotReadyAddresses === true, 'headless Service publishes not-ready pods (names resolve while memcached starts)');
    const servers = cfg.backend?.servers || [];
    const ns = sts.metadata.namespace;
    const names = [...Array(sts.spec.replicas).keys()].map((i) => `${sts.metadata.name}-${i}`);
    const podSvcs = names.map((n) => by('Service').find((s) => s.metadata.name === n));
    if (externalConfig) {
        ok('backend.servers not checked: they are in the existing Secret');
    } else if (podSvcs.every((s) => s)) {
        // addressing: service - one ClusterIP Service per StatefulSet pod, stable across rescheduling
        check(podSvcs.every((s, i) => s.spec.clusterIP !== 'None' &&
            s.spec.selector?.['statefulset.kubernetes.io/pod-name'] === names[i]),
            `one ClusterIP Service per memcached pod, selecting it by pod-name (${names.length})`);
        check(servers.length === names.length && servers.every((s, i) => s.startsWith(`${names[i]}.${ns}.svc.`)),
            `backend.servers are the per-pod Services, in ring order (${servers.length})`);
    } else {
        // addressing: headless - the StatefulSet's stable pod DNS names
        check(servers.length === names.length && servers.every((s, i) => s.startsWith(`${names[i]}.${sts.spec.serviceName}.${ns}.svc.`)),
            `backend.servers are the StatefulSet's stable pod names, in ring order (${servers.length})`);
    }
    const mport = sts.spec.template.spec.containers[0].ports?.[0]?.containerPort;
    if (!externalConfig) check(servers.every((s) => s.endsWith(`:${mport}`)), `backend.servers use the memcached port ${mport}`);
    check(by('PodDisruptionBudget').some((p) => p.metadata.name === sts.metadata.name), 'memcached PDB present');
} else if (cfg.backend?.type === 'memcached') {
    check((cfg.backend.servers || []).length > 0, `external memcached servers listed (${(cfg.backend.servers || []).length})`);
}

const netpols = by('NetworkPolicy');
if (opts['expect-netpol'] === 'present') {
    check(netpols.length >= 1, `NetworkPolicy present (${netpols.length})`);
    if (sts && dep) {
        const np = netpols.find((n) => JSON.stringify(n.spec.podSelector.matchLabels) === JSON.stringify(sts.spec.selector.matchLabels));
        check(!!np, 'a NetworkPolicy selects the memcached pods');
        if (np) {
            check(np.spec.policyTypes?.includes('Ingress') && (np.spec.ingress || []).length === 1, 'memcached: one ingress rule');
            const from = np.spec.ingress?.[0]?.from || [];
            check(from.length === 1 && JSON.stringify(from[0].podSelector?.matchLabels) === JSON.stringify(dep.spec.selector.matchLabels) &&
                !from[0].namespaceSelector, 'memcached: ingress only from ratelimitd pods of this release');
            const ports = np.spec.ingress?.[0]?.ports || [];
            const mport = sts.spec.template.spec.containers[0].ports[0];
            check(ports.length === 1 && (ports[0].port === mport.containerPort || ports[0].port === mport.name),
                `memcached: ingress only on the memcached port (${ports[0]?.port})`);
        }
    }
    if (dep) {
        const rnp = netpols.find((n) => JSON.stringify(n.spec.podSelector.matchLabels) === JSON.stringify(dep.spec.selector.matchLabels));
        if (rnp) {
            const allowed = (rnp.spec.ingress || []).flatMap((r) => (r.ports || []).map((p) => p.port));
            check(allowed.includes('http') && (allowed.includes('admin') || !by('Service').some((s) => s.spec.ports.some((p) => p.name === 'admin'))),
                `ratelimitd NetworkPolicy admits its http and admin ports (${allowed.join(',')})`);
            const adminRule = (rnp.spec.ingress || []).find((r) => (r.ports || []).some((p) => p.port === 'admin'));
            check(!adminRule || adminRule.ports.length === 1, 'the admin port has an ingress rule of its own (its own peers)');
        }
    }
} else if (opts['expect-netpol'] === 'absent') {
    check(netpols.length === 0, 'no NetworkPolicy');
}
if (opts['expect-servicemonitor']) {
    const n = by('ServiceMonitor').length;
    check(opts['expect-servicemonitor'] === 'present' ? n === 1 : n === 0, `ServiceMonitor ${opts['expect-servicemonitor']}`);
    if (n === 1) {
        const ep = by('ServiceMonitor')[0].spec.endpoints[0];
        const svc = by('Service').find((s) => s.spec.ports.some((p) => p.name === ep.port));
        const wantPort = by('Service').some((s) => s.spec.ports.some((p) => p.name === 'admin')) ? 'admin' : 'http';
        check(ep.port === wantPort && ep.path === '/metrics' && !!svc, `ServiceMonitor scrapes /metrics on port ${wantPort} (got ${ep.port})`);
    }
}

const dash = objs.find((o) => o.kind === 'ConfigMap' && o.data?.['ratelimitd.json']);
if (dash) {
    try {
        const j = JSON.parse(dash.data['ratelimitd.json']);
        for (const p of j.panels) for (const t of p.targets) checkPromql(t.expr, `dashboard panel "${p.title}"`);
        const exprs = j.panels.flatMap((p) => p.targets.map((t) => t.expr)).join(' ');
        check(['ratelimitd_requests_total', 'ratelimitd_backend_request_duration_seconds_bucket', 'ratelimitd_backend_errors_total', 'ratelimitd_backend_node_up']
            .every((m) => exprs.includes(m)), 'Grafana dashboard JSON parses and uses the ratelimitd_* metrics');
    } catch (e) {
        fail(`Grafana dashboard JSON: ${e.message}`);
    }
}

for (const m of [...usedMetrics].sort()) console.log(`uses-metric=${m}`);

if (failures) {
    console.log(`${failures} check(s) FAILED`);
    process.exit(1);
}
