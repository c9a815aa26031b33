/* moeprint explorer (index.html): overview, domain significance, token view (tokens.js), plans. */
(function () {
  'use strict';
  const M = window.moeprint;
  const el = M.el;
  const VIEWS = [['overview', 'Overview'], ['domain', 'Domain'], ['tradeoff', 'Trade-off'], ['tokens', 'Tokens'],
    ['plans', 'Plans & retention']];
  const GENS = [['all', 'all generations'], ['finished', 'finished only'], ['unfinished', 'unfinished only']];
  const METRICS = [['share', 'usage share (tokens routed / tokens)'], ['mass', 'gate mass (mean weight / token)'],
    ['lift', 'lift (share / share in all)']];

  let meta, state;

  function setState(patch) {
    Object.assign(state, patch);
    M.writeState(state);
  }
  M.setState = setState;
  M.explorerState = () => state;

  // the data source shown: this run's traces (0), published summaries or a --compare run
  function source() { return meta.runs[Math.min(meta.runs.length - 1, Math.max(0, +state.src || 0))]; }
  function sourceSelect(id) {
    if (meta.runs.length < 2) return null;
    return M.select('Source', id, meta.runs.map((r, i) => [i, i === 0 ? r.name + ' (this run)' : r.name]), meta.runs.indexOf(source()),
      (v) => { setState({ src: v }); render(); });
  }
  function domainEntry(name) {
    const run = source();
    return run.domains.find((d) => d.name === name) || run.domains[0];
  }
  M.domainEntry = domainEntry;

  // Generation filter: a domain file carries its sums over finished and over unfinished generations
  // (byFinished); a filtered view re-derives every number (shares, lift, entropy, tests) from those sums.
  function genOf(dom) { return dom.byFinished && GENS.some(([g]) => g === state.gen) ? state.gen : 'all'; }
  function filtered(dom, gen) {
    if (gen === 'all' || !dom.byFinished) return dom;
    const group = dom.byFinished[gen];
    return Object.assign({}, dom, { segments: group.segments, routerEntropy: null, nPrompts: group.nPrompts, gen });
  }
  function genSelect(id, dom) {
    if (!dom.byFinished) return null;
    return M.select('Generations', id, GENS, genOf(dom), (v) => { setState({ gen: v }); render(); });
  }
  function genNote(dom) {
    return dom.gen ? ' Filtered to ' + dom.gen + ' generations (' + dom.nPrompts + ' prompts): counts re-aggregated in ' +
      'the page from the sums over those prompts\' traces.' : '';
  }

  // share / mass / lift of one (domain, segment) as a function (layer, expert) -> number
  function metricOf(dom, all, seg, metric) {
    const u = dom.segments[seg];
    const ua = all.segments[seg];
    if (!u) return () => NaN;
    const share = (l, e) => (u.layerTokens[l] ? u.tokens[l][e] / u.layerTokens[l] : NaN);
    if (metric === 'mass') return (l, e) => (u.layerTokens[l] ? u.mass[l][e] / u.layerTokens[l] : NaN);
    if (metric === 'lift') {
      if (!ua) return () => NaN;
      return (l, e) => share(l, e) / (ua.layerTokens[l] ? ua.tokens[l][e] / ua.layerTokens[l] : NaN);
    }
    return share;
  }

  function tabs() {
    const bar = el('div', { class: 'tabs', role: 'tablist' });
    VIEWS.forEach(([id, label]) => bar.append(el('button', {
      type: 'button', role: 'tab', id: 'tab-' + id, 'aria-selected': String(state.view === id), text: label,
      onclick: () => { setState({ view: id }); render(); },
    })));
    return bar;
  }

  async function renderOverview(root) {
    const run = source();
    const dname = domainEntry(state.domain).name;
    const [dom0, all0] = await Promise.all([M.load(domainEntry(dname).file), M.load(run.domains[0].file)]);
    const gen = genOf(dom0);
    const dom = filtered(dom0, gen), all = filtered(all0, gen);
    const segs = Object.keys(dom.segments);
    if (!segs.length) {
      root.append(el('div', { class: 'controls' }, [sourceSelect('ov-source'), genSelect('ov-gen', dom0)]),
        el('p', { class: 'note', id: 'overview-empty', text: dname + ' has no ' + gen + ' generations.' }));
      return;
    }
    const seg = segs.includes(state.segment) ? state.segment : 'all';
    const metric = METRICS.some(([m]) => m === state.metric) ? state.metric : 'share';
    const L = meta.run.numLayers, E = meta.run.numExperts;
    const value = metricOf(dom, all, seg, metric);
    const share = metricOf(dom, all, seg, 'share'), mass = metricOf(dom, all, seg, 'mass'), lift = metricOf(dom, all, seg, 'lift');

    const controls = el('div', { class: 'controls' }, [sourceSelect('ov-source'),
      M.select('Domain', 'ov-domain', run.domains.map((d) => [d.name, d.name]), dname, (v) => { setState({ domain: v }); render(); }),
      M.select('Segment', 'ov-segment', segs.map((s) => [s, s]), seg, (v) => { setState({ segment: v }); render(); }),
      M.select('Colour', 'ov-metric', METRICS, metric, (v) => { setState({ metric: v }); render(); }),
      genSelect('ov-gen', dom0),
    ]);
    let maxV = 0;
    for (let l = 0; l < L; l++) for (let e = 0; e < E; e++) { const v = value(l, e); if (Number.isFinite(v)) maxV = Math.max(maxV, v); }
    const color = metric === 'lift'
      ? (v) => (Number.isFinite(v) && v > 0 ? M.divColor(Math.max(-1, Math.min(1, Math.log2(v) / 2))) : '#ddd')
      : (v) => (Number.isFinite(v) ? M.seqColor(maxV ? v / maxV : 0) : '#ddd');
    const u = dom.segments[seg];
    const cursor = [Math.min(L - 1, +state.layer || 0), Math.min(E - 1, +state.expert || 0)];
    const hm = M.heatmap({
      rows: L, cols: E, value, color, cursor, label: 'layer by expert heatmap of ' + metric + ' for ' + dname,
      describe: (l, e) => 'layer ' + l + ', expert ' + e + ': share ' + M.fmt(share(l, e)) + ' (' + M.fmtCount(u.tokens[l][e]) +
        ' of ' + M.fmtCount(u.layerTokens[l]) + ' tokens) · gate mass ' + M.fmt(mass(l, e)) + ' · lift ' + M.fmt(lift(l, e)),
      onSelect: (l, e) => setState({ layer: l, expert: e }),
    });
    hm.canvas.id = 'overview-heatmap';
    hm.readout.id = 'overview-readout';
    const bar = metric === 'lift' ? M.colorbar((t) => M.divColor(2 * t - 1), '¼×', '4×', 'lift vs all (log scale)')
      : M.colorbar(M.seqColor, '0', M.fmt(maxV), metric === 'share' ? 'share of tokens' : 'mean gate weight per token');

    // top experts per layer by the chosen colour metric, entropy of the layer's usage
    const rows = [];
    for (let l = 0; l < L; l++) {
      const order = Array.from({ length: E }, (_, e) => e).filter((e) => Number.isFinite(value(l, e)))
        .sort((a, b) => value(l, b) - value(l, a) || a - b);
      const n = u.tokens[l].reduce((s, x) => s + x, 0);
      let h = 0;
      u.tokens[l].forEach((x) => { if (x > 0) { const p = x / n; h -= p * Math.log2(p); } });
      rows.push({ layer: l, entropy: n ? h : NaN, eff: n ? Math.pow(2, h) : NaN, router: dom.routerEntropy ? dom.routerEntropy[l] : null,
        top: order.slice(0, 5).map((e) => e + ' (' + M.fmt(value(l, e), 3) + ')').join(', ') });
    }
    const cols = [{ key: 'layer', label: 'layer' }, { key: 'entropy', label: 'usage entropy (bits)', fmt: (v) => M.fmt(v) },
      { key: 'eff', label: 'effective experts', fmt: (v) => M.fmt(v, 3) }, { key: 'top', label: 'top 5 by ' + metric, left: true }];
    if (dom.routerEntropy) cols.splice(3, 0, { key: 'router', label: 'router entropy (bits / token)', fmt: (v) => M.fmt(v) });
    const side = el('div', { class: 'panel side' }, [
      el('h2', { text: 'Top experts and usage entropy per layer' }, []),
      M.exportBar('top_experts_' + dname + '_' + seg, cols, () => rows),
      el('div', { class: 'scroll' }, [M.table(cols, rows, { id: 'top-experts' })]),
      el('p', { class: 'note', text: 'Entropy of the layer\'s expert-usage distribution (max log2 ' + E + ' = ' +
        M.fmt(Math.log2(E), 3) + ' bits); 2^entropy is the number of equally used experts with the same spread. ' +
        (dom.routerEntropy ? 'Router entropy: mean over tokens of the entropy of the router\'s full softmax (from recorded logits; ' +
          'all segments).' : 'This run recorded no router logits, so the router\'s per-token entropy is not available.') }),
    ]);
    const rk = Object.keys(dom.rankings || {});
    if (rk.length) side.append(rankingPanel(dom, rk));
    root.append(controls, el('div', { class: 'row' }, [
      el('div', { class: 'panel' }, [el('h2', { text: dname + ' · ' + seg + ' · ' + metric }), hm.node, bar,
        el('p', { class: 'note', text: 'Source: ' + dom.source + '.' + genNote(dom) + ' Share = tokens that routed to the expert / tokens ' +
          '(a layer\'s shares sum to top-k = ' + meta.run.topK + '). Gate mass = mean gate weight per token (sums to 1). ' +
          'Lift = share / share in all. Arrow keys move the cursor; the line above the colour bar reads out the cell.' })]),
      side]));
    performance.mark('moeprint:overview-rendered');
    document.body.dataset.rendered = ['overview', dname, seg, metric].concat(gen === 'all' ? [] : [gen]).join('|'); // for tests
  }

  function rankingPanel(dom, criteria) {
    const crit = criteria.includes(state.criterion) ? state.criterion : criteria[0];
    const panel = el('div', {}, [el('h3', { text: 'Rankings from fingerprints (best first)' })]);
    panel.append(M.select('Criterion', 'ov-criterion', criteria.map((c) => [c, c]), crit,
      (v) => { setState({ criterion: v }); render(); }));
    const rows = dom.rankings[crit].map((ids, l) => ({ layer: l, ids: ids.slice(0, 8).join(', ') }));
    panel.append(el('div', { class: 'scroll' }, [M.table([{ key: 'layer', label: 'layer' },
      { key: 'ids', label: 'first 8 experts', left: true }], rows, { id: 'rankings' })]));
    return panel;
  }

  // chi-square / G per layer of one selection against the rest, computed in the page (stats.js)
  function vsRestInPage(own, all) {
    const L = own.tokens.length;
    const rows = own.tokens.map((row, l) => M.stats.layerTest(row, all.tokens[l].map((x, e) => x - row[e])));
    const q = M.stats.bh(rows.map((r) => r.p));
    return { chi2: rows.map((r) => r.chi2), df: rows.map((r) => r.df), p: rows.map((r) => r.p), q: q.slice(0, L),
      g: rows.map((r) => r.g), cramers_v: rows.map((r) => r.v), tvd: rows.map((r) => r.tvd) };
  }

  async function renderDomain(root) {
    const domains = source().domains.filter((d) => d.name !== 'all');
    if (!domains.length) { root.append(el('p', { text: 'This run has a single domain; nothing to test against.' })); return; }
    const entry = domains.find((d) => d.name === state.domain) || domains[0];
    const [dom0, all0] = await Promise.all([M.load(entry.file), M.load(source().domains[0].file)]);
    const gen = genOf(dom0);
    root.append(el('div', { class: 'controls' }, [sourceSelect('dv-source'), M.select('Domain', 'dv-domain', domains.map((d) => [d.name, d.name]),
      entry.name, (v) => { setState({ domain: v }); render(); }), genSelect('dv-gen', dom0)]));
    const dom = filtered(dom0, gen);
    if (gen !== 'all' && !(dom.segments.all && filtered(all0, gen).segments.all)) {
      root.append(el('p', { class: 'note', id: 'domain-empty', text: entry.name + ' has no ' + gen + ' generations.' }));
      return;
    }
    const t = gen === 'all' ? dom.vsRest : vsRestInPage(dom.segments.all, filtered(all0, gen).segments.all);
    const st = gen === 'all' ? dom.stability : null;
    const rows = t.chi2.map((_, l) => ({ layer: l, tokens: dom.segments.all.layerTokens[l], chi2: t.chi2[l], df: t.df[l],
      p: t.p[l], q: t.q[l], g: t.g[l], v: t.cramers_v[l], tvd: t.tvd[l], jaccard: st ? st.jaccard[l] : null }));
    const cols = [{ key: 'layer', label: 'layer' }, { key: 'tokens', label: 'tokens', fmt: M.fmtCount },
      { key: 'chi2', label: 'chi-square', fmt: (v) => M.fmt(v) }, { key: 'df', label: 'df' },
      { key: 'p', label: 'p', fmt: M.fmtP }, { key: 'q', label: 'q (BH)', fmt: M.fmtP },
      { key: 'g', label: 'G', fmt: (v) => M.fmt(v) }, { key: 'v', label: "Cramér's V", fmt: (v) => M.fmt(v, 3) },
      { key: 'tvd', label: 'TVD', fmt: (v) => M.fmt(v, 3) }];
    if (st) cols.push({ key: 'jaccard', label: 'kept-set stability (Jaccard, top ' + st.nKeep + ')', fmt: (v) => M.fmt(v, 3) });
    root.append(el('div', { class: 'panel' }, [
      el('h2', { text: entry.name + ' vs the rest of the run, per layer' + (gen === 'all' ? '' : ' (' + gen + ' generations)') }),
      M.exportBar('domain_tests_' + entry.name + (gen === 'all' ? '' : '_' + gen), cols, () => rows),
      el('div', { class: 'scroll' }, [M.table(cols, rows, { id: 'domain-tests' })]),
      el('p', { class: 'note', text: 'Per layer: chi-square and G-test on the 2 × experts table of token counts (' +
        entry.name + ' vs every other domain), q = Benjamini-Hochberg across layers. Effect sizes: Cramér\'s V and the ' +
        'total-variation distance between the two usage distributions (0 = identical, 1 = disjoint). With many tokens ' +
        'every layer is "significant": tokens of one prompt are not independent and a token picks ' + meta.run.topK +
        ' experts at once, so p is optimistic; read the effect sizes.' + (st ? ' Stability: mean Jaccard overlap of the top ' +
        st.nKeep + ' experts chosen from two random halves of the domain\'s ' + st.nPrompts +
        ' prompts (20 splits); low values mean the kept set depends on which prompts were recorded.' : gen !== 'all' ?
        genNote(dom) + ' Tests computed in the page against the rest of the run\'s ' + gen + ' generations; kept-set ' +
        'stability and the analyze tests cover all generations and are not shown.' : ' (No per-prompt ' +
        'counts in this source, so no kept-set stability.)') }),
    ]));
    if (dom.analyzeStats && gen === 'all') root.append(analyzePanel(entry.name, dom.analyzeStats));
  }

  // Trade-off: for each N, the share of routing traffic and of REAP saliency the first N experts of a ranking hold,
  // beside the in-domain perplexity retention a sweep measured at N (all computed at build time, see tradeoff.py)
  async function renderTradeoff(root) {
    const domains = source().domains;
    const entry = domains.find((d) => d.name === state.domain) || domains.find((d) => d.name !== 'all') || domains[0];
    const dom = await M.load(entry.file);
    const crits = Object.keys(dom.tradeoff || {});
    const controls = el('div', { class: 'controls' }, [sourceSelect('to-source'), M.select('Domain', 'to-domain',
      domains.map((d) => [d.name, d.name]), entry.name, (v) => { setState({ domain: v }); render(); })]);
    root.append(controls);
    if (!crits.length) {
      root.append(el('p', { class: 'note', id: 'tradeoff-empty', text: 'No rankings for ' + entry.name + ' in this source ' +
        '(run `moeprint analyze` to rank experts), so there is no kept set per N to show.' }));
      return;
    }
    const crit = crits.includes(state.criterion) ? state.criterion : crits[0];
    controls.append(M.select('Ranking', 'to-criterion', crits.map((c) => [c, c]), crit, (v) => { setState({ criterion: v }); render(); }));
    const t = dom.tradeoff[crit];
    const rows = t.n.map((n, i) => ({ n, traffic: t.traffic[i], reap: t.reap ? t.reap[i] : null,
      retention: t.retention ? t.retention[i] : null, random: t.randomRetention ? t.randomRetention[i] : null }));
    const cols = [{ key: 'n', label: 'experts kept per layer (N)' },
      { key: 'traffic', label: 'share of routing traffic kept', fmt: (v) => M.fmt(v, 4) },
      { key: 'reap', label: 'share of REAP saliency kept', fmt: (v) => (v === null ? 'no norms recorded' : M.fmt(v, 4)) },
      { key: 'retention', label: 'measured in-domain ppl retention (' + crit + ')', fmt: (v) => (v === null ? '-' : M.fmt(v, 4)) },
      { key: 'random', label: 'measured retention, random (mean of seeds)', fmt: (v) => (v === null ? '-' : M.fmt(v, 4)) }];
    const series = [{ name: 'routing traffic kept', x: t.n, y: t.traffic }];
    if (t.reap) series.push({ name: 'REAP saliency kept', x: t.n, y: t.reap });
    if (t.retention) series.push({ name: 'ppl retention (' + crit + ')', x: t.n, y: t.retention.map((v) => (v === null ? NaN : v)) });
    if (t.randomRetention) series.push({ name: 'ppl retention (random)', x: t.n, y: t.randomRetention.map((v) => (v === null ? NaN : v)) });
    root.append(el('div', { class: 'row' }, [
      el('div', { class: 'panel' }, [el('h2', { text: entry.name + ' · ' + crit + ': what the kept experts hold' }),
        el('figure', { style: { margin: '0' }, id: 'tradeoff-chart' }, [M.lineChart(series, { label: 'trade-off for ' + entry.name,
          xlabel: 'experts kept', width: 520, height: 220 }), el('figcaption', { class: 'note' }, series.map((s, i) =>
          el('span', { style: { marginRight: '.6em' } }, [el('span', { class: 'swatch', style: { background: M.seriesColor(i) } }), s.name])))]),
        el('p', { class: 'note', text: 'For each N the kept set of a layer is the first N experts of the ' + crit + ' ranking. ' +
          'Traffic = routed decisions that went to kept experts / all decisions (summed over layers, all segments); REAP = ' +
          'the same for summed gate weight × expert output norm. Retention = base / cut in-domain perplexity measured by a ' +
          'sweep (moeprint sweep) at that N, when one exists under evals/.' })]),
      el('div', { class: 'panel side' }, [M.exportBar('tradeoff_' + entry.name + '_' + crit, cols, () => rows),
        el('div', { class: 'scroll' }, [M.table(cols, rows, { id: 'tradeoff-table' })])]),
    ]));
    document.body.dataset.rendered = ['tradeoff', entry.name, crit].join('|');
  }

  // fingerprints/stats.json of the analyze stage: every per-layer list it wrote, under its own name
  function analyzePanel(name, a) {
    const cols = [{ key: 'layer', label: 'layer' }].concat(a.columns.map((c, i) => ({ key: 'c' + i, label: c,
      fmt: /(^|\.)(p|q)(_|$)/.test(c.split('.').pop()) ? M.fmtP : (v) => M.fmt(v) })));
    const rows = a.rows.map((r, l) => Object.assign({ layer: l }, Object.fromEntries(r.map((v, i) => ['c' + i, v]))));
    const summary = Object.entries(a.summary).map(([k, v]) => ({ key: k, value: v }));
    return el('div', { class: 'panel' }, [
      el('h2', { text: name + ': tests written by moeprint analyze (fingerprints/stats.json)' }),
      M.exportBar('analyze_stats_' + name, cols, () => rows),
      el('div', { class: 'scroll' }, [M.table(cols, rows, { id: 'analyze-stats' })]),
      el('h3', { text: 'Summary' }),
      M.table([{ key: 'key', label: 'statistic', left: true }, { key: 'value', label: 'value', fmt: (v) => M.fmt(v) }], summary),
      el('p', { class: 'note', text: 'Prompt-permutation and token-controlled tests (when present) treat the prompt, not the ' +
        'token, as the unit, so they are the ones to cite for domain specialisation; see docs/analyze.md.' }),
    ]);
  }

  async function renderPlans(root) {
    const data = await M.load('plans.js');
    if (!data.plans.length && !data.evals.length && !data.charts.length && !data.cuts.rows.length) {
      root.append(el('p', { class: 'note', text: 'No prune plans (plans/*.json) or evaluate results (evals/*.json) in this run yet.' }));
      return;
    }
    if (data.plans.length) {
      const cols = [{ key: 'file', label: 'plan', left: true }, { key: 'domain', label: 'domain', left: true },
        { key: 'criterion', label: 'criterion', left: true }, { key: 'nExperts', label: 'experts kept / layer' }];
      root.append(el('div', { class: 'panel' }, [el('h2', { text: 'Prune plans' }), M.exportBar('plans', cols, () => data.plans),
        M.table(cols, data.plans, { id: 'plans' })]));
      const pi = Math.min(data.plans.length - 1, +state.plan || 0);
      const plan = data.plans[pi];
      const kept = plan.kept.map((ids) => new Set(ids));
      const hm = M.heatmap({ rows: kept.length, cols: meta.run.numExperts, value: (l, e) => (kept[l].has(e) ? 1 : 0),
        color: (v) => (v ? '#1f7a4d' : '#eceef2'), label: 'experts kept by ' + plan.file,
        describe: (l, e) => 'layer ' + l + ', expert ' + e + (kept[l].has(e) ? ': kept' : ': cut') });
      root.append(el('div', { class: 'panel' }, [M.select('Plan', 'pl-plan', data.plans.map((p, i) => [i, p.file]), pi,
        (v) => { setState({ plan: v }); render(); }), hm.node]));
    }
    if (data.cuts.rows.length) { // moeprint evaluate results, one row per evaluated cut
      const cols = data.cuts.columns.map((c, i) => ({ key: 'c' + i, label: c, left: i < 4, fmt: i < 5 ? null : (v) => M.fmt(v) }));
      const rows = data.cuts.rows.map((r) => Object.fromEntries(r.map((v, i) => ['c' + i, v])));
      root.append(el('div', { class: 'panel' }, [el('h2', { text: 'Evaluated cut models (moeprint evaluate)' }),
        M.exportBar('evaluated_cuts', cols, () => rows), el('div', { class: 'scroll' }, [M.table(cols, rows, { id: 'cuts' })]),
        el('p', { class: 'note', text: 'Perplexity ratio = cut / base on held-out text of the cut\'s own domain (in-domain) and the others ' +
          '(off-domain); 1 = no loss. KL: mean per-token KL divergence of the cut from the base model.' })]));
    }
    if (data.charts.length) {
      // one small chart per domain and metric: metrics have different units (perplexity ratio, KL, accuracy)
      root.append(el('div', { class: 'panel' }, [el('h2', { text: 'Retention curves (x: experts kept per layer; hover a point for its value)' }),
        el('div', { class: 'row', id: 'retention-charts' }, data.charts.map((c) => el('figure', { style: { margin: '0' } }, [
          M.lineChart(c.series, { label: c.title, xlabel: 'experts kept', width: 360, height: 150 }),
          el('figcaption', { class: 'note' }, [c.title + ' '].concat(c.series.map((s, i) => el('span', { style: { marginRight: '.6em' } }, [
            el('span', { class: 'swatch', style: { background: M.seriesColor(i) } }), s.name]))))])))]));
    }
    if (data.evals.length) {
      const rows = data.evals.map(([file, path, value]) => ({ file, path, value }));
      const cols = [{ key: 'file', label: 'file', left: true }, { key: 'path', label: 'field', left: true },
        { key: 'value', label: 'value', fmt: (v) => M.fmt(v, 5) }];
      root.append(el('div', { class: 'panel' }, [el('h2', { text: 'Other results under evals/ (every number found)' }),
        el('p', { class: 'note', text: 'JSON files without a moeprint.evaluate/1 or moeprint.sweep/1 schema: every number they hold, ' +
          'by key path; lists of records with an n_experts field are also drawn as curves above.' }),
        M.exportBar('evals', cols, () => rows), el('div', { class: 'scroll' }, [M.table(cols, rows, { id: 'evals' })])]));
    }
  }

  async function render() {
    // keep keyboard focus on the control that triggered the re-render (same id after rebuilding)
    const focusedId = document.activeElement && document.activeElement.id;
    const root = M.clear(document.getElementById('view'));
    root.append(tabs());
    const body = el('div', { id: 'view-' + state.view });
    root.append(body);
    try {
      if (state.view === 'domain') await renderDomain(body);
      else if (state.view === 'tradeoff') await renderTradeoff(body);
      else if (state.view === 'tokens') await M.renderTokens(body, meta);
      else if (state.view === 'plans') await renderPlans(body);
      else await renderOverview(body);
      const again = focusedId && document.getElementById(focusedId);
      if (again) again.focus();
    } catch (err) {
      M.showError(err);
      throw err;
    }
  }
  M.render = render;

  function start() {
    meta = M.get('meta.js');
    if (!meta) { M.showError('data/meta.js is missing: rebuild the site with `moeprint site RUN_DIR`.'); return; }
    M.header(meta);
    state = M.readState();
    if (!VIEWS.some(([v]) => v === state.view)) state.view = 'overview';
    window.addEventListener('hashchange', () => { state = M.readState(); render(); });
    render();
  }
  document.addEventListener('DOMContentLoaded', start);
})();
