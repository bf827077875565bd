// Tests the LuCI view openwrt/luci-app-ferry/.../view/ferry/config.js with stand-ins for LuCI's
// modules (view, form, fs, poll, dom, E, _): it must load, build a form whose UCI options are
// exactly the ones ferry-render.sh / ferry.init read, and render the status panel from a sample
// status JSON and from an unreachable agent. Run: node openwrt/tests/test-luci.js
'use strict';
const fs = require('fs');
const path = require('path');
const assert = require('assert');

const root = path.resolve(__dirname, '..');
const viewFile = path.join(root, 'luci-app-ferry/htdocs/luci-static/resources/view/ferry/config.js');
const renderFile = path.join(root, 'package/ferry/files/ferry-render.sh');
const initFile = path.join(root, 'package/ferry/files/ferry.init');
const statusFile = path.join(root, 'luci-app-ferry/root/usr/libexec/ferry-status');

// LuCI's String.prototype.format, reduced to what the view uses (%s, %t, %1024.2mB).
String.prototype.format = function (...args) {
  let i = 0;
  return this.replace(/%(\d+)?(\.\d+)?([smt])/g, () => String(args[i++]));
};
const _ = (s) => s;

// E(tag, attrs, children) / E([], children): a tiny DOM stand-in.
function E(tag, attrs, children) {
  if (Array.isArray(tag)) return { tag: '#fragment', children: attrs || [] };
  if (children === undefined && (typeof attrs === 'string' || Array.isArray(attrs) || (attrs && attrs.tag))) {
    children = attrs;
    attrs = {};
  }
  return { tag, attrs: attrs || {}, children: children === undefined ? [] : children };
}
function textOf(node) {
  if (node == null) return '';
  if (typeof node === 'string') return node;
  if (Array.isArray(node)) return node.map(textOf).join(' ');
  return textOf(node.children);
}

const options = [];
class Option {
  constructor(section, name) {
    this.section = section;
    this.name = name;
    this.values = [];
    options.push(this);
  }
  value(v) { this.values.push(v); }
  depends() {}
}
class Section {
  constructor(type, uciType) {
    this.kind = type;
    this.uciType = uciType;
    this.tabs = [];
  }
  tab(name) { this.tabs.push(name); }
  taboption(tab, cls, name) {
    assert(this.tabs.includes(tab), `option ${name} uses undeclared tab ${tab}`);
    return new cls(this, name);
  }
  option(cls, name) { return new cls(this, name); }
}
class NamedSection extends Section {
  constructor(name, uciType) { super('named', uciType); this.sectionName = name; }
}
class GridSection extends Section {
  constructor(uciType) { super('grid', uciType); }
}
const sections = [];
class FormMap {
  constructor(config) { this.config = config; }
  section(cls, ...args) { const s = new cls(...args); sections.push(s); return s; }
  render() { return Promise.resolve(E('div', { id: 'map' }, [])); }
}
const form = {
  Map: FormMap, NamedSection, GridSection,
  Flag: class extends Option {}, Value: class extends Option {},
  ListValue: class extends Option {}, DynamicList: class extends Option {},
};

let statusReply;
const pauseCalls = [];
const luciFs = {
  exec_direct: (cmd, args) => {
    if (cmd === '/usr/libexec/ferry-pause') {
      pauseCalls.push(args);
      return Promise.resolve(args[0] === 'pause' ? 'sharing paused: ...\n' : 'sharing resumed\n');
    }
    assert.strictEqual(cmd, '/usr/libexec/ferry-status');
    return statusReply instanceof Error ? Promise.reject(statusReply) : Promise.resolve(statusReply);
  },
};
const notes = [];
const ui = { addNotification: (title, body) => notes.push(textOf(body)) };
// The first element below `node` whose attrs satisfy `pred`.
function find(node, pred) {
  if (node == null || typeof node === 'string') return null;
  if (Array.isArray(node)) {
    for (const n of node) { const f = find(n, pred); if (f) return f; }
    return null;
  }
  if (node.attrs && pred(node)) return node;
  return find(node.children, pred);
}
const polls = [];
const poll = { add: (fn, interval) => polls.push({ fn, interval }) };
const dom = { content: (node, content) => { node.children = content; } };
const view = { extend: (o) => o };

// UCI options the shell side reads: `config_get[_bool] VAR "$_fr_s"|main|"$1" OPTION` and
// `ferry_arr SECTION OPTION` (and `uci -q get ferry.main.OPTION` in the status helper), split
// into the main section and peer sections.
function shellOptions() {
  const main = new Set();
  const peer = new Set();
  const src = fs.readFileSync(renderFile, 'utf8') + fs.readFileSync(initFile, 'utf8');
  for (const m of src.matchAll(/config_get(?:_bool)? \S+ ("\$_fr_s"|main|"\$1") (\w+)/g))
    (m[1] === '"$1"' ? peer : main).add(m[2]);
  for (const m of src.matchAll(/ferry_arr ("\$_fr_s"|"\$1") (\w+)/g))
    (m[1] === '"$1"' ? peer : main).add(m[2]);
  for (const m of fs.readFileSync(statusFile, 'utf8').matchAll(/uci -q get ferry\.main\.(\w+)/g))
    main.add(m[1]);
  return { main, peer };
}

let passed = 0;
let failed = 0;
async function check(name, fn) {
  try {
    await fn();
    passed++;
    console.log(`ok   - ${name}`);
  } catch (e) {
    failed++;
    console.log(`FAIL - ${name}\n       ${String(e.stack || e).split('\n').join('\n       ')}`);
  }
}

(async () => {
  const src = fs.readFileSync(viewFile, 'utf8');
  let viewObj;
  await check('view source evaluates as a LuCI view module', () => {
    // LuCI wraps each view in a function; a top-level `return` is legal there.
    viewObj = new Function('view', 'form', 'fs', 'poll', 'dom', 'ui', 'E', '_', src)(view, form, luciFs, poll, dom, ui, E, _);
    assert.strictEqual(typeof viewObj.load, 'function');
    assert.strictEqual(typeof viewObj.render, 'function');
  });

  const sample = {
    version: '0.1.0', uptime_secs: 3725, public_key: 'xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=',
    listen: '0.0.0.0:51820', egress_mode: 'tun',
    peers: [{ name: 'laptop', public_key: 'TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0=', endpoint: '198.51.100.7:40000',
      last_handshake_secs: 12, rx_bytes: 123456789, tx_bytes: 42 }],
  };
  let page;
  await check('load + render with a running agent shows its status and peers', async () => {
    statusReply = JSON.stringify(sample);
    const st = await viewObj.load();
    assert.deepStrictEqual(st, sample);
    page = await viewObj.render(st);
    const text = textOf(page);
    for (const want of ['0.1.0', '3725', '0.0.0.0:51820', 'laptop', '198.51.100.7:40000', '123456789', '12 ago'])
      assert(text.includes(want), `status panel lacks ${want}: ${text}`);
  });

  await check('a paid relay shows counts, earnings, ledger contact and errors in words', async () => {
    statusReply = JSON.stringify(Object.assign({}, sample, {
      paid: { sessions: 3, earned_bytes: 987654321, receipts_cosigned: 41, receipts_pending: 2,
        receipts_submitted: 39, ledger_configured: true, last_ledger_contact_secs: 17,
        ledger_error: 'ledger unreachable: connection refused' },
    }));
    await polls[0].fn();
    const text = textOf(page);
    for (const want of ['Paid sharing', 'Paid sessions', '3', '987654321', '41', '39', '17 ago', 'connection refused'])
      assert(text.includes(want), `paid block lacks ${want}: ${text}`);
    // The directory's verdict in words: listed, or why not (what the ledger's probe found).
    statusReply = JSON.stringify(Object.assign({}, sample, {
      paid: { sessions: 0, earned_bytes: 0, receipts_cosigned: 0, receipts_pending: 0,
        receipts_submitted: 0, ledger_configured: true, last_ledger_contact_secs: 3, ledger_error: null,
        directory: { listed: false, seen_from: '198.51.100.7', probe_rtt_micros: null, error: null,
          problems: [{ code: 'hello_port_closed', message: 'Hello port 51821 did not answer the directory\'s probe: open UDP 51821 on the router' }] } },
    }));
    await polls[0].fn();
    for (const want of ['Relay directory', 'not listed', 'did not answer the directory', 'open UDP 51821'])
      assert(textOf(page).includes(want), `directory block lacks ${want}: ${textOf(page)}`);
    statusReply = JSON.stringify(Object.assign({}, sample, {
      paid: { sessions: 0, earned_bytes: 0, receipts_cosigned: 0, receipts_pending: 0,
        receipts_submitted: 0, ledger_configured: true, last_ledger_contact_secs: 3, ledger_error: null,
        directory: { listed: true, seen_from: '203.0.113.9', probe_rtt_micros: 12345, error: null, problems: [] } },
    }));
    await polls[0].fn();
    assert(textOf(page).includes('listed (seen from 203.0.113.9, probe answered in 12 ms)'), textOf(page));
    statusReply = JSON.stringify(Object.assign({}, sample, {
      paid: { sessions: 0, earned_bytes: 0, receipts_cosigned: 0, receipts_pending: 0,
        receipts_submitted: null, ledger_configured: false, last_ledger_contact_secs: null, ledger_error: null },
    }));
    await polls[0].fn();
    assert(textOf(page).includes('no ledger URL configured'), textOf(page));
    // Pause/resume: the button runs the helper with the action and says what it answered.
    const button = () => find(page, (n) => n.tag === 'button');
    assert(textOf(page).includes('Sharing') && textOf(button()).includes('Pause sharing'), textOf(page));
    await button().attrs.click();
    assert.deepStrictEqual(pauseCalls, [['pause']]);
    assert(notes.pop().includes('sharing paused'), 'notification');
    statusReply = JSON.stringify(Object.assign({}, sample, {
      paid: { sessions: 0, paused: true, earned_bytes: 0, receipts_cosigned: 0, receipts_pending: 0,
        receipts_submitted: 0, ledger_configured: true, last_ledger_contact_secs: 3, ledger_error: null },
    }));
    await polls[0].fn();
    assert(textOf(page).includes('paused by you') && textOf(button()).includes('Resume sharing'), textOf(page));
    await button().attrs.click();
    assert.deepStrictEqual(pauseCalls, [['pause'], ['resume']]);
    // The quota used up: said in words, with what was shared and when it resets.
    statusReply = JSON.stringify(Object.assign({}, sample, {
      paid: { sessions: 0, paused: false, earned_bytes: 0, receipts_cosigned: 0, receipts_pending: 0,
        receipts_submitted: 0, ledger_configured: true, last_ledger_contact_secs: 3, ledger_error: null,
        sharing: { state: 'daily_quota', why: 'the daily sharing quota is used up (it resets at local midnight)',
          daily_quota_bytes: 1073741824, monthly_quota_bytes: null, used_today_bytes: 1073741824,
          used_this_period_bytes: 5368709120, daily_reset_in_secs: 3600, monthly_reset_in_secs: 86400,
          quota_reset_day: 1, schedule: ['mon-fri 18:00-23:30'], timezone: '/etc/TZ (CET-1CEST)' } },
    }));
    await polls[0].fn();
    for (const want of ['not sharing now: the daily sharing quota is used up', 'Shared today',
      '1073741824B of 1073741824B', 'resets in 3600', 'Sharing hours', 'mon-fri 18:00-23:30 (/etc/TZ (CET-1CEST))'])
      assert(textOf(page).includes(want), `status panel lacks ${want}: ${textOf(page)}`);
    assert(!textOf(page).includes('Shared this month'), 'no monthly quota set: no row');
  });

  await check('status panel polls every 5 s and shows an unreachable agent', async () => {
    assert.strictEqual(polls.length, 1);
    assert.strictEqual(polls[0].interval, 5);
    statusReply = new Error('Command failed');
    await polls[0].fn();
    const text = textOf(page);
    assert(text.includes('not running') && text.includes('Command failed'), text);
    statusReply = '{not json';
    await polls[0].fn();
    assert(textOf(page).includes('invalid JSON'), textOf(page));
    // Agent down: the helper prints its JSON error on stdout (or nothing at all).
    statusReply = '{"running":false,"error":"no answer from http://127.0.0.1:9586/status"}\n';
    await polls[0].fn();
    assert(textOf(page).includes('The agent is not running') && textOf(page).includes('no answer'), textOf(page));
    assert(!textOf(page).includes('invalid JSON'), textOf(page));
    statusReply = '';
    await polls[0].fn();
    assert(textOf(page).includes('The agent is not running'), textOf(page));
    statusReply = JSON.stringify({ version: '0.2.0', peers: [] });
    await polls[0].fn();
    assert(textOf(page).includes('No peers connected'), textOf(page));
  });

  await check('form edits exactly the UCI options the init script renders', () => {
    const shell = shellOptions();
    const main = sections.find((s) => s.kind === 'named');
    const peer = sections.find((s) => s.kind === 'grid');
    assert(main && main.sectionName === 'main' && main.uciType === 'ferry', 'NamedSection main of type ferry');
    assert(peer && peer.uciType === 'peer', 'GridSection of type peer');
    const formMain = new Set(options.filter((o) => o.section === main).map((o) => o.name));
    const formPeer = new Set(options.filter((o) => o.section === peer).map((o) => o.name));
    assert.deepStrictEqual([...formMain].sort(), [...shell.main].sort());
    assert.deepStrictEqual([...formPeer].sort(), [...shell.peer].sort());
  });

  await check('validators accept good and reject bad input', () => {
    const svc = options.find((o) => o.name === 'tunnel_service');
    assert.strictEqual(svc.validate('x', 'udp/53'), true);
    const block = options.find((o) => o.name === 'block_port');
    const allowp = options.find((o) => o.name === 'allow_port');
    for (const ok of ['tcp/25', 'udp/6881-6889', '465', 'none'])
      assert.strictEqual(block.validate('x', ok), true, ok);
    for (const bad of ['sctp/25', 'tcp/0', 'tcp/70000', '30-20', 'tcp/', 'all'])
      assert.notStrictEqual(block.validate('x', bad), true, bad);
    assert.notStrictEqual(allowp.validate('x', 'none'), true, "'none' only blocks");
    assert.strictEqual(allowp.validate('x', 'tcp/443'), true);
    assert.notStrictEqual(svc.validate('x', 'dns'), true);
    const name = options.find((o) => o.name === 'name');
    assert.strictEqual(name.validate('x', 'laptop-1@home.lan'), true);
    assert.notStrictEqual(name.validate('x', 'a"b'), true);
    assert.notStrictEqual(name.validate('x', 'x'.repeat(65)), true);
    // Exactly what the agent accepts: tun-name (check_ifname) and the listen port (1..65535).
    const tun = options.find((o) => o.name === 'tun_name');
    for (const ok of ['ferry0', 'fy.7_a-b', 'x'.repeat(15)]) assert.strictEqual(tun.validate('x', ok), true, ok);
    for (const bad of ['a@b', 'wg+1', 'a:b', 'a/b', 'a b', '.', '..', 'x'.repeat(16)])
      assert.notStrictEqual(tun.validate('x', bad), true, bad);
    const port = options.find((o) => o.name === 'listen_port');
    for (const ok of ['1', '51820', '65535']) assert.strictEqual(port.validate('x', ok), true, ok);
    for (const bad of ['0', '65536', '-1', '1.5', 'abc', '123456'])
      assert.notStrictEqual(port.validate('x', bad), true, bad);
    // Paid sharing: what the renderer accepts.
    const net = options.find((o) => o.name === 'network_id');
    assert.strictEqual(net.validate('x', '00112233445566778899aabbccddeeff'), true);
    assert.notStrictEqual(net.validate('x', '0011'), true);
    const lk = options.find((o) => o.name === 'ledger_key');
    assert.strictEqual(lk.validate('x', '42'.repeat(32)), true);
    assert.notStrictEqual(lk.validate('x', 'zz' + '42'.repeat(31)), true);
    const url = options.find((o) => o.name === 'ledger_url');
    assert.strictEqual(url.validate('x', 'http://10.0.0.5:7878'), true);
    assert.notStrictEqual(url.validate('x', 'ftp://x'), true);
    const state = options.find((o) => o.name === 'state_dir');
    assert.strictEqual(state.validate('x', '/etc/ferry/state'), true);
    for (const bad of ['/tmp/ferry', '/var/ferry', '/tmp', 'relative'])
      assert.notStrictEqual(state.validate('x', bad), true, bad);
    // Sharing limits: what the renderer and the agent accept.
    const gib = options.find((o) => o.name === 'daily_quota_gib');
    for (const ok of ['0', '5', '0.5', '100']) assert.strictEqual(gib.validate('x', ok), true, ok);
    for (const bad of ['1,5', '.5', '5.', '-1', 'lots']) assert.notStrictEqual(gib.validate('x', bad), true, bad);
    const sched = options.find((o) => o.name === 'schedule');
    for (const ok of ['mon-fri 18:00-23:30', 'sat,sun 00:00-24:00', 'daily 09:00-17:00', 'fri-mon,wed 22:00-02:00'])
      assert.strictEqual(sched.validate('x', ok), true, ok);
    for (const bad of ['weekdays 18:00-23:00', 'mon 25:00-26:00', 'mon 18:00', 'mon 24:00-01:00'])
      assert.notStrictEqual(sched.validate('x', bad), true, bad);
    const key = options.find((o) => o.name === 'public_key');
    assert.strictEqual(key.validate('x', sample.public_key), true);
    assert.notStrictEqual(key.validate('x', 'short='), true);
  });

  console.log(`test-luci: ${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
})();
