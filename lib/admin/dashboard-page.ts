/**
 * The live dashboard: one self-contained page (inline CSS and JS, no external
 * resources, no build step) fed by Server-Sent Events from /events. It lives
 * in a .ts file so that tsc ships it with the rest of dist/ unchanged.
 * The client script avoids template literals so this file can hold it verbatim.
 */
export const DASHBOARD_HTML = String.raw`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>kup dashboard</title>
<style>
  :root { --bg:#0f1419; --panel:#172029; --line:#263341; --text:#dce3ea; --dim:#8b9aab; --ok:#3fb950; --warn:#d29922; --bad:#f85149; --accent:#58a6ff; --flow:#79c0ff; }
  * { box-sizing: border-box; }
  body { margin:0; font:14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; background:var(--bg); color:var(--text); }
  header { display:flex; flex-wrap:wrap; gap:8px 18px; align-items:center; padding:12px 20px; border-bottom:1px solid var(--line); background:var(--panel); position:sticky; top:0; z-index:1; }
  header h1 { font-size:17px; margin:0 8px 0 0; }
  .kv { color:var(--dim); } .kv b { color:var(--text); font-weight:600; }
  .badge { display:inline-block; padding:1px 8px; border-radius:10px; font-size:12px; font-weight:600; border:1px solid var(--line); }
  .ok { color:var(--ok); border-color:var(--ok); } .bad { color:var(--bad); border-color:var(--bad); } .warn { color:var(--warn); border-color:var(--warn); } .dim { color:var(--dim); }
  main { padding:16px 20px; display:grid; grid-template-columns:repeat(auto-fill, minmax(600px, 1fr)); gap:16px; }
  .card { background:var(--panel); border:1px solid var(--line); border-radius:8px; padding:12px 14px; overflow-x:auto; }
  .card h2 { font-size:15px; margin:0 0 6px; display:flex; gap:8px; align-items:center; flex-wrap:wrap; }
  .mono { font-family:ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size:12.5px; }
  .row { margin:3px 0; color:var(--dim); } .row b { color:var(--text); font-weight:500; }
  .stats { display:flex; gap:14px; flex-wrap:wrap; margin:8px 0; }
  .stat { min-width:70px; } .stat .v { font-size:18px; font-weight:600; color:var(--text); } .stat .l { font-size:11px; color:var(--dim); text-transform:uppercase; letter-spacing:.04em; }
  table { width:100%; border-collapse:collapse; margin-top:6px; }
  th, td { text-align:left; padding:3px 6px; border-top:1px solid var(--line); white-space:nowrap; }
  th { font-size:11px; color:var(--dim); font-weight:600; text-transform:uppercase; letter-spacing:.04em; }
  td.n { text-align:right; font-variant-numeric:tabular-nums; }
  tr.unused td { opacity:.55; }
  .next { color:var(--accent); font-weight:700; }
  .flow { position:relative; width:70px; height:8px; border-radius:4px; background:#0b1016; overflow:hidden; }
  .flow .bar { position:absolute; left:0; top:0; bottom:0; background:linear-gradient(90deg, #1f6feb, var(--flow)); }
  .flow.live .bar { background:repeating-linear-gradient(90deg, #1f6feb 0 8px, var(--flow) 8px 16px); background-size:32px 100%; animation:move .6s linear infinite; }
  @keyframes move { from { background-position:0 0; } to { background-position:32px 0; } }
  .empty { color:var(--bad); margin-top:6px; }
  section.rules { padding:0 20px 24px; }
  section.rules pre { background:var(--panel); border:1px solid var(--line); border-radius:8px; padding:10px 12px; overflow:auto; max-height:360px; }
  footer { padding:0 20px 20px; color:var(--dim); font-size:12px; }
</style>
</head>
<body>
<header>
  <h1>kube-userspace-proxy</h1>
  <span id="health" class="badge dim">connecting</span>
  <span class="kv">node <b id="node">-</b></span>
  <span class="kv">mode <b>userspace</b></span>
  <span class="kv">source <b id="source">-</b></span>
  <span class="kv">last sync <b id="sync">-</b></span>
  <span class="kv">service ports <b id="t-ports">0</b></span>
  <span class="kv">endpoints <b id="t-eps">0</b></span>
  <span class="kv">active connections <b id="t-active">0</b></span>
  <span id="live" class="badge dim">offline</span>
</header>
<main id="services"><div class="card dim">Waiting for the first update...</div></main>
<section class="rules">
  <h2 style="font-size:15px">iptables rules currently installed</h2>
  <pre id="rules" class="mono dim">running without iptables rules</pre>
</section>
<footer>Updates are pushed by the proxy over Server-Sent Events, at most twice a second and only when something changed. Counters are read from the listeners when an update is built; the data path never waits on this page.</footer>
<script>
(function () {
  'use strict';
  var prev = {};      // key -> {t, accepted, bytes}
  var prevPicks = {}; // key|endpoint -> picks
  function esc(s) { return String(s).replace(/[&<>"']/g, function (c) { return { '&':'&amp;', '<':'&lt;', '>':'&gt;', '"':'&quot;', "'":'&#39;' }[c]; }); }
  function fmtBytes(n) { var u = ['B','KiB','MiB','GiB','TiB']; var i = 0; while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; } return (i === 0 ? n : n.toFixed(1)) + ' ' + u[i]; }
  function fmtNum(n) { return Number(n).toLocaleString('en-US'); }
  function ago(iso) { if (!iso) return 'never'; var s = (Date.now() - Date.parse(iso)) / 1000; if (s < 1) return 'just now'; if (s < 90) return Math.round(s) + 's ago'; if (s < 5400) return Math.round(s / 60) + 'm ago'; return Math.round(s / 3600) + 'h ago'; }
  function hp(ip, port) { return (ip.indexOf(':') >= 0 ? '[' + ip + ']' : ip) + ':' + port; }

  function renderHeader(d) {
    var h = document.getElementById('health');
    if (d.health) { h.textContent = d.health.healthy ? 'healthy' : d.health.nodeEligible === false ? 'node not eligible' : 'unhealthy'; h.className = 'badge ' + (d.health.healthy ? 'ok' : 'bad'); h.title = d.health.reason || ''; }
    document.getElementById('node').textContent = d.node;
    var src = d.source.kind + (d.source.synced ? ', synced' : ', not synced') + (d.source.lastError ? ' - ' + d.source.lastError : '');
    document.getElementById('source').textContent = src;
    // A failing source does not make /healthz fail (the data plane keeps the last state), so it is flagged here.
    document.getElementById('source').className = d.source.lastError ? 'warn' : '';
    document.getElementById('sync').textContent = d.sync ? ago(d.sync.lastSyncTime) + ' (' + d.sync.lastSyncDurationMs.toFixed(1) + ' ms' + (d.sync.consecutiveFailures ? ', ' + d.sync.consecutiveFailures + ' failing' : '') + ')' : '-';
    document.getElementById('t-ports').textContent = fmtNum(d.totals.servicePorts);
    document.getElementById('t-eps').textContent = fmtNum(d.totals.readyEndpoints) + ' ready / ' + fmtNum(d.totals.endpoints);
    document.getElementById('t-active').textContent = fmtNum(d.totals.activeConnections);
  }

  function vips(s) {
    var parts = [];
    s.clusterIPs.forEach(function (ip) { parts.push('ClusterIP <b class="mono">' + esc(hp(ip, s.portNumber)) + '</b>'); });
    if (s.nodePort) parts.push('NodePort <b class="mono">:' + s.nodePort + '</b>');
    s.externalIPs.forEach(function (ip) { parts.push('externalIP <b class="mono">' + esc(hp(ip, s.portNumber)) + '</b>'); });
    s.loadBalancerIPs.forEach(function (ip) { parts.push('LB <b class="mono">' + esc(hp(ip, s.portNumber)) + '</b>'); });
    if (s.healthCheckNodePort) parts.push('health check <b class="mono">:' + s.healthCheckNodePort + '</b>');
    return parts.join(' &middot; ') || 'no virtual IP';
  }

  function card(d, s, now) {
    var p = prev[s.key]; var rate = 0, brate = 0;
    var bytes = s.protocol === 'TCP' ? s.stats.bytesIn + s.stats.bytesOut : s.stats.datagramsIn + s.stats.datagramsOut;
    if (p && now > p.t) { rate = (s.stats.accepted - p.accepted) * 1000 / (now - p.t); brate = (bytes - p.bytes) * 1000 / (now - p.t); }
    prev[s.key] = { t: now, accepted: s.stats.accepted, bytes: bytes };
    var listener = s.proxyPort === null ? '<span class="bad">not listening' + (s.listenerError ? ': ' + esc(s.listenerError) : '') + '</span>'
      : '<b class="mono">' + esc(s.exposedAt || hp(d.bindAddress, s.proxyPort)) + '</b>' + (s.externalProxyPort ? ' (external traffic: <b class="mono">:' + s.externalProxyPort + '</b>)' : '') + (s.clusterProxyPort ? ' (node and short-circuited pod traffic: <b class="mono">:' + s.clusterProxyPort + '</b>)' : '');
    var maxActive = 1; s.endpoints.forEach(function (e) { if (e.activeConnections > maxActive) maxActive = e.activeConnections; });
    var totalPicks = 0; s.endpoints.forEach(function (e) { totalPicks += e.picks; });
    var rows = s.endpoints.map(function (e) {
      var id = hp(e.ip, e.port); var pk = s.key + '|' + id;
      var moved = prevPicks[pk] !== undefined && e.picks > prevPicks[pk]; prevPicks[pk] = e.picks;
      var st = e.terminating ? '<span class="badge warn">terminating</span>' : e.ready ? '<span class="badge ok">ready</span>' : '<span class="badge bad">not ready</span>';
      if (e.terminating && e.serving) st += ' <span class="badge dim">serving</span>';
      var live = e.activeConnections > 0 || moved;
      var w = Math.round(100 * e.activeConnections / maxActive);
      return '<tr class="' + (e.inUse || e.inUseExternal ? '' : 'unused') + '" data-endpoint="' + esc(id) + '">' +
        '<td class="mono">' + (s.nextEndpoint === id ? '<span class="next" title="the next connection goes here">&#9654;</span> ' : '&nbsp;&nbsp; ') + esc(id) + '</td>' +
        '<td>' + st + '</td><td class="dim">' + esc(e.nodeName || '-') + (e.isLocal ? ' (local)' : '') + '</td>' +
        '<td><div class="flow' + (live ? ' live' : '') + '"><div class="bar" style="width:' + (live ? Math.max(w, 12) : 0) + '%"></div></div></td>' +
        '<td class="n active">' + fmtNum(e.activeConnections) + '</td>' +
        '<td class="n picks">' + fmtNum(e.picks) + (totalPicks ? ' <span class="dim">(' + Math.round(100 * e.picks / totalPicks) + '%)</span>' : '') + '</td>' +
        '<td class="n">' + (e.failures ? '<span class="bad">' + fmtNum(e.failures) + '</span>' : '0') + '</td></tr>';
    }).join('');
    var statsHtml = '<div class="stat"><div class="v accepted">' + fmtNum(s.stats.accepted) + '</div><div class="l">' + (s.protocol === 'TCP' ? 'connections' : 'sessions') + '</div></div>' +
      '<div class="stat"><div class="v active-total">' + fmtNum(s.stats.active) + '</div><div class="l">active</div></div>' +
      '<div class="stat"><div class="v">' + rate.toFixed(1) + '</div><div class="l">new / s</div></div>';
    if (s.protocol === 'TCP') {
      statsHtml += '<div class="stat"><div class="v">' + fmtBytes(s.stats.bytesIn) + '</div><div class="l">bytes in</div></div>' +
        '<div class="stat"><div class="v">' + fmtBytes(s.stats.bytesOut) + '</div><div class="l">bytes out</div></div>';
    } else {
      statsHtml += '<div class="stat"><div class="v">' + fmtNum(s.stats.datagramsIn) + ' / ' + fmtNum(s.stats.datagramsOut) + '</div><div class="l">datagrams in / out</div></div>' +
        '<div class="stat"><div class="v">' + fmtNum(s.stats.datagramsDropped) + '</div><div class="l">dropped</div></div>' +
        '<div class="stat"><div class="v' + (s.stats.receiveDrops ? ' bad' : '') + '">' + fmtNum(s.stats.receiveDrops) + '</div><div class="l">kernel drops</div></div>';
    }
    statsHtml += '<div class="stat"><div class="v' + (s.stats.dialFailures ? ' bad' : '') + '">' + fmtNum(s.stats.dialFailures) + '</div><div class="l">failed dials</div></div>' +
      '<div class="stat"><div class="v' + (s.stats.noEndpoints ? ' warn' : '') + '">' + fmtNum(s.stats.noEndpoints) + '</div><div class="l">refused</div></div>';
    var affinity = s.sessionAffinityTimeoutSeconds ? ' <span class="badge warn" title="ClientIP session affinity">affinity ' + s.sessionAffinityTimeoutSeconds + 's</span>' : '';
    var policies = (s.internalTrafficPolicy === 'Local' ? ' <span class="badge dim">internal: Local</span>' : '') + (s.externalTrafficPolicy === 'Local' && (s.nodePort || s.externalIPs.length || s.loadBalancerIPs.length) ? ' <span class="badge dim">external: Local</span>' : '');
    return '<div class="card" data-key="' + esc(s.key) + '">' +
      '<h2><span class="mono">' + esc(s.name) + ':' + esc(s.port) + '/' + s.protocol + '</span> <span class="badge dim">' + esc(s.type) + '</span>' + affinity + policies + '</h2>' +
      '<div class="row">' + vips(s) + '</div>' +
      '<div class="row">listener ' + listener + ' &middot; strategy <b>' + esc(s.strategy) + '</b>' + (s.nextEndpoint ? ' &middot; next <b class="mono next">' + esc(s.nextEndpoint) + '</b>' : '') + '</div>' +
      '<div class="stats">' + statsHtml + (brate > 0 && s.protocol === 'TCP' ? '<div class="stat"><div class="v">' + fmtBytes(brate) + '/s</div><div class="l">throughput</div></div>' : '') + '</div>' +
      (s.endpoints.length === 0 ? '<div class="empty">No endpoints: clients are refused at once.</div>'
        : '<table><thead><tr><th>endpoint</th><th>state</th><th>node</th><th>flow</th><th class="n">active</th><th class="n">picks</th><th class="n">failed</th></tr></thead><tbody>' + rows + '</tbody></table>') +
      '</div>';
  }

  function render(d) {
    renderHeader(d);
    var now = Date.now();
    var html = d.services.map(function (s) { return card(d, s, now); }).join('');
    // One line per port kup cannot proxy (SCTP), so a Service that silently gets nothing is seen.
    var unsupported = (d.unsupported || []).map(function (u) {
      return '<div class="row unsupported" data-unsupported="' + esc(u.key) + '"><span class="badge warn">not proxied</span> <b class="mono">' + esc(u.name + ':' + u.port + '/' + u.protocol) + '</b> ' + esc(u.reason) + '</div>';
    }).join('');
    document.getElementById('services').innerHTML = (html || '<div class="card dim">The table is empty: no Services with a ClusterIP.</div>') +
      (unsupported ? '<div class="card"><h2>Unsupported service ports</h2>' + unsupported + '</div>' : '');
  }

  var es = new EventSource('events');
  var live = document.getElementById('live');
  es.addEventListener('open', function () { live.textContent = 'live'; live.className = 'badge ok'; });
  es.addEventListener('error', function () { live.textContent = 'reconnecting'; live.className = 'badge warn'; });
  es.addEventListener('status', function (ev) { render(JSON.parse(ev.data)); });
  es.addEventListener('rules', function (ev) {
    var r = JSON.parse(ev.data); var pre = document.getElementById('rules');
    pre.textContent = r.rules === null ? 'running without iptables rules' : r.rules; pre.className = 'mono' + (r.rules === null ? ' dim' : '');
  });
})();
</script>
</body>
</html>
`;
