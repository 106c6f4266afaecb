// The page's status display, in words a non-engineer understands. Everything shown goes
// through textContent (never innerHTML): node names, errors and adapter strings are data.

const WORDS = {
  starting: ['Starting…', ''],
  connecting: ['Connecting…', 'busy'],
  joined: ['Connected, waiting for work', 'ok'],
  loading: ['Loading', 'busy'],
  ready: ['Ready', 'ok'],
  working: ['Working', 'busy'],
  lost: ['Lost connection — retrying', 'bad'],
  error: ['Problem', 'bad'],
  nogpu: ['This browser cannot help yet', 'bad'],
  gpulost: ['The GPU stopped — reload the page to rejoin', 'bad'],
};

export class StatusView {
  constructor(doc) {
    const $ = (id) => doc.getElementById(id);
    this.el = { status: $('status'), progress: $('progress'), help: $('help'), shard: $('shard'), tokens: $('tokens'), speed: $('speed'), adapter: $('adapter'), log: $('log') };
    this.state = { state: 'starting', tokens: 0, shards: [], errors: [] };
  }

  /** Applies an event from the node ({ state?, fraction?, shards?, tokens?, ... }). */
  update(ev) {
    Object.assign(this.state, ev);
    if (ev.state === 'error' && ev.text) this.state.errors.push(ev.text);
    const s = this.state;
    const [words, cls] = WORDS[s.state] ?? [String(s.state), ''];
    let text = words;
    if (s.state === 'loading') text = `Loading ${Math.round((s.fraction ?? 0) * 100)}%`;
    if (s.state === 'error' && ev.text) text = `Problem: ${ev.text}`;
    this.el.status.textContent = text;
    this.el.status.className = `status ${cls}`;
    this.el.progress.hidden = s.state !== 'loading';
    if (s.state === 'loading') this.el.progress.value = s.fraction ?? 0;
    this.el.shard.textContent = s.shards.length ? s.shards.map((i) => `#${i}`).join(', ') : 'none yet';
    this.el.tokens.textContent = String(s.tokens ?? 0);
    if (s.tokensPerSecond) this.el.speed.textContent = `${s.tokensPerSecond.toFixed(2)} tokens/s`;
    if (ev.adapter) this.el.adapter.textContent = ev.adapter;
    if (ev.help !== undefined) {
      this.el.help.hidden = !ev.help;
      this.el.help.textContent = ev.help ?? '';
    }
    if (ev.text || ev.state) this.log(`${new Date().toISOString().slice(11, 19)} ${ev.state ?? ''} ${ev.text ?? ''}`.trim());
  }

  log(line) {
    const lines = (this.el.log.textContent + '\n' + line).split('\n').slice(-200);
    this.el.log.textContent = lines.join('\n').trim();
  }
}
