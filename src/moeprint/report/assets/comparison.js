/* moeprint comparison (comparison.html): two selections side by side, tests per layer and per expert. */
(function () {
  'use strict';
  const M = window.moeprint;
  const el = M.el;
  const S = M.stats;
  let meta, state;

  function setState(patch) { Object.assign(state, patch); M.writeState(state); }

  function options(runIndex, kind) {
    const r = meta.runs[runIndex];
    return kind === 'category' ? r.categories : r.domains;
  }
  // A side's selection from the state (prefix 'a' or 'b'), clamped to what exists.
  function pick(p, fallbackName) {
    const runIndex = Math.min(meta.runs.length - 1, Math.max(0, +state[p + 'run'] || 0));
    // B defaults to "rest of A's run": a domain against everything else is the comparison the tests are valid for
    const fallbackKind = p === 'b' && !state.bname ? 'rest' : 'domain';
    let kind = ['domain', 'category', 'rest'].includes(state[p + 'kind']) ? state[p + 'kind'] : fallbackKind;
    if (p === 'a' && kind === 'rest') kind = 'domain';
    if (kind === 'category' && !meta.runs[runIndex].categories.length) kind = 'domain';
    const list = kind === 'rest' ? [] : options(runIndex, kind);
    const entry = list.find((x) => x.name === state[p + 'name']) || list.find((x) => x.name === fallbackName) || list[0];
    return { runIndex, kind, entry, seg: state[p + 'seg'] || 'all' };
  }
  function describe(sel, a) {
    if (sel.kind === 'rest') return 'rest of ' + meta.runs[a.runIndex].name + ' (all minus A) · ' + sel.seg;
    return (meta.runs.length > 1 ? meta.runs[sel.runIndex].name + ' · ' : '') + sel.kind + ' ' + sel.entry.name + ' · ' + sel.seg;
  }

  function sideControls(p, sel) {
    const box = el('fieldset', { class: 'panel' }, [el('legend', { text: p === 'a' ? 'Selection A' : 'Selection B' })]);
    if (meta.runs.length > 1 && sel.kind !== 'rest') {
      box.append(M.select('Run', p + '-run', meta.runs.map((r, i) => [i, r.name]), sel.runIndex, (v) => { setState({ [p + 'run']: v }); render(); }));
    }
    const kinds = [['domain', 'domain'], ['category', 'category']].concat(p === 'b' ? [['rest', 'rest of A\'s run']] : []);
    box.append(M.select('Kind', p + '-kind', kinds, sel.kind, (v) => { setState({ [p + 'kind']: v, [p + 'name']: '' }); render(); }));
    if (sel.kind !== 'rest') {
      box.append(M.select('Name', p + '-name', options(sel.runIndex, sel.kind).map((x) => [x.name, x.name]), sel.entry.name,
        (v) => { setState({ [p + 'name']: v }); render(); }));
    }
    box.append(M.select('Segment', p + '-seg', ['all', 'prompt', 'think', 'answer', 'generated'].map((s) => [s, s]), sel.seg,
      (v) => { setState({ [p + 'seg']: v }); render(); }));
    return box;
  }

  async function usageOf(sel, a) {
    if (sel.kind === 'rest') {
      const [all, own] = await Promise.all([M.load(meta.runs[a.runIndex].domains[0].file), M.load(a.entry.file)]);
      const ua = all.segments[sel.seg], uo = own.segments[sel.seg];
      if (!ua) return null;
      if (!uo) return ua;
      return { tokens: ua.tokens.map((row, l) => row.map((x, e) => x - uo.tokens[l][e])),
        layerTokens: ua.layerTokens.map((n, l) => n - uo.layerTokens[l]) };
    }
    const d = await M.load(sel.entry.file);
    return d.segments[sel.seg] || null;
  }

  function overlapWarning(a, b) {
    if (b.kind === 'rest' || a.runIndex !== b.runIndex) return null;
    const names = [a.entry.name, b.entry.name];
    const sameSeg = a.seg === b.seg || a.seg === 'all' || b.seg === 'all';
    const nested = a.entry.name === b.entry.name || names.includes('all') ||
      (a.kind !== b.kind && (a.entry.name.startsWith(b.entry.name + '/') || b.entry.name.startsWith(a.entry.name + '/')));
    if (nested && sameSeg) {
      return 'A and B share tokens: the tests assume two independent samples, so these p-values are not valid. ' +
        'Compare against "rest of A\'s run" instead.';
    }
    return null;
  }

  async function render() {
    const focusedId = document.activeElement && document.activeElement.id;
    const root = M.clear(document.getElementById('view'));
    const firstDomain = meta.runs[0].domains.find((d) => d.name !== 'all') || meta.runs[0].domains[0];
    const a = pick('a', firstDomain.name);
    const b = pick('b', (meta.runs[0].domains[1] || meta.runs[0].domains[0]).name);
    root.append(el('div', { class: 'row' }, [sideControls('a', a), sideControls('b', b)]));
    const [ua, ub] = await Promise.all([usageOf(a, a), usageOf(b, a)]);
    if (!ua || !ub) {
      root.append(el('p', { class: 'error', text: 'Selection ' + (!ua ? 'A' : 'B') + ' has no routed tokens in that segment.' }));
      return;
    }
    const warn = overlapWarning(a, b);
    if (warn) root.append(el('p', { class: 'warn', id: 'overlap-warning', text: warn }));
    const L = meta.run.numLayers, E = meta.run.numExperts;
    const nameA = describe(a, a), nameB = describe(b, a);

    // per layer
    const layerRows = [];
    for (let l = 0; l < L; l++) {
      const t = S.layerTest(ua.tokens[l], ub.tokens[l]);
      layerRows.push({ layer: l, nA: ua.layerTokens[l], nB: ub.layerTokens[l], chi2: t.chi2, df: t.df, p: t.p, g: t.g, pG: t.pG, v: t.v, tvd: t.tvd });
    }
    const q = S.bh(layerRows.map((r) => r.p)), qG = S.bh(layerRows.map((r) => r.pG));
    layerRows.forEach((r, l) => { r.q = q[l]; r.qG = qG[l]; });
    const layerCols = [{ key: 'layer', label: 'layer' }, { key: 'nA', label: 'tokens A', fmt: M.fmtCount }, { key: 'nB', label: 'tokens B', fmt: M.fmtCount },
      { key: 'chi2', label: 'chi-square', fmt: (v) => M.fmt(v) }, { key: 'df', label: 'df' }, { key: 'p', label: 'p', fmt: M.fmtP },
      { key: 'q', label: 'q (BH)', fmt: M.fmtP }, { key: 'g', label: 'G', fmt: (v) => M.fmt(v) }, { key: 'pG', label: 'p (G)', fmt: M.fmtP },
      { key: 'qG', label: 'q (G, BH)', fmt: M.fmtP }, { key: 'v', label: "Cramér's V", fmt: (v) => M.fmt(v, 3) },
      { key: 'tvd', label: 'TVD', fmt: (v) => M.fmt(v, 3) }];

    // per expert, BH over all layer x expert tests
    const expertRows = [];
    for (let l = 0; l < L; l++) {
      for (let e = 0; e < E; e++) {
        const t = S.expertTest(ua.tokens[l][e], ua.layerTokens[l], ub.tokens[l][e], ub.layerTokens[l]);
        expertRows.push({ layer: l, expert: e, cA: ua.tokens[l][e], shareA: t.pa, cB: ub.tokens[l][e], shareB: t.pb,
          diff: t.diff, log2ratio: t.log2ratio, z: t.z, p: t.p });
      }
    }
    const qe = S.bh(expertRows.map((r) => r.p));
    expertRows.forEach((r, i) => { r.q = qe[i]; });
    const expertCols = [{ key: 'layer', label: 'layer' }, { key: 'expert', label: 'expert' }, { key: 'cA', label: 'tokens A', fmt: M.fmtCount },
      { key: 'shareA', label: 'share A', fmt: (v) => M.fmt(v) }, { key: 'cB', label: 'tokens B', fmt: M.fmtCount },
      { key: 'shareB', label: 'share B', fmt: (v) => M.fmt(v) }, { key: 'diff', label: 'A − B', fmt: (v) => M.fmt(v) },
      { key: 'log2ratio', label: 'log2 ratio', fmt: (v) => M.fmt(v, 3) }, { key: 'z', label: 'z', fmt: (v) => M.fmt(v, 3) },
      { key: 'p', label: 'p', fmt: M.fmtP }, { key: 'q', label: 'q (BH)', fmt: M.fmtP }];

    // heatmaps: share A, share B, A - B
    let maxS = 0, maxD = 0;
    expertRows.forEach((r) => { maxS = Math.max(maxS, r.shareA, r.shareB); maxD = Math.max(maxD, Math.abs(r.diff)); });
    const at = (l, e) => expertRows[l * E + e];
    const hmOpts = (key, label) => ({ rows: L, cols: E, maxWidth: 360, maxHeight: 260, label,
      value: (l, e) => at(l, e)[key],
      color: key === 'diff' ? (v) => M.divColor(maxD ? v / maxD : 0) : (v) => M.seqColor(maxS ? v / maxS : 0),
      describe: (l, e) => { const r = at(l, e); return 'L' + l + ' E' + e + ': A ' + M.fmt(r.shareA) + ', B ' + M.fmt(r.shareB) + ', A−B ' + M.fmt(r.diff) + ', q ' + M.fmtP(r.q); },
      onSelect: (l) => { setState({ layer: l }); renderExperts(); } });
    const maps = [['shareA', 'A: ' + nameA], ['shareB', 'B: ' + nameB], ['diff', 'A − B']].map(([key, label]) => {
      const h = M.heatmap(hmOpts(key, label));
      h.canvas.id = 'cmp-heat-' + key;
      return el('div', { class: 'panel hmpanel' }, [el('h2', { text: label }), h.node]);
    });
    root.append(el('div', { class: 'row' }, maps));
    root.append(el('div', { class: 'row' }, [M.colorbar(M.seqColor, '0', M.fmt(maxS), 'share of tokens'),
      M.colorbar((t) => M.divColor(2 * t - 1), M.fmt(-maxD), M.fmt(maxD), 'A − B')]));

    root.append(el('div', { class: 'panel' }, [el('h2', { text: 'Per layer: does the expert usage differ?' }),
      M.exportBar('layer_tests', layerCols, () => layerRows),
      el('div', { class: 'scroll' }, [M.table(layerCols, layerRows, { id: 'layer-tests' })]),
      el('p', { class: 'note', text: 'Pearson chi-square and G-test on the 2 × experts table of token counts (experts unused by both ' +
        'sides dropped), survival function of chi-square(df) computed in the page; q = Benjamini-Hochberg across layers. ' +
        'Effect sizes: Cramér\'s V = sqrt(chi²/N) and TVD = half the L1 distance of the two usage distributions. ' +
        'Counts are tokens, but a token picks ' + meta.run.topK + ' experts and tokens of one prompt are correlated, so ' +
        'p-values are optimistic with many tokens: read the effect sizes.' })]));

    const expertPanel = el('div', { class: 'panel' });
    root.append(expertPanel);
    function renderExperts() {
      M.clear(expertPanel);
      const layerSel = state.layer === undefined || state.layer === 'all' ? 'all' : String(Math.min(L - 1, +state.layer || 0));
      const rows = layerSel === 'all' ? expertRows : expertRows.filter((r) => String(r.layer) === layerSel);
      expertPanel.append(el('h2', { text: 'Per expert: share of tokens routed, A vs B' }),
        el('div', { class: 'controls' }, [M.select('Layer', 'cmp-layer', [['all', 'all layers']].concat(
          Array.from({ length: L }, (_, l) => [String(l), 'layer ' + l])), layerSel, (v) => { setState({ layer: v }); renderExperts(); }),
        M.exportBar('expert_tests', expertCols, () => rows)]),
        el('div', { class: 'scroll' }, [M.table(expertCols, rows, { id: 'expert-tests' })]),
        el('p', { class: 'note', text: 'Two-proportion z-test (pooled) per expert on the share of tokens that routed to it; q = ' +
          'Benjamini-Hochberg over all ' + L * E + ' layer × expert tests. log2 ratio of shares with +0.5 smoothing.' }));
    }
    renderExperts();
    const again = focusedId && document.getElementById(focusedId);
    if (again) again.focus();
    performance.mark('moeprint:comparison-rendered');
    document.body.dataset.rendered = location.hash; // what is on screen (for tests)
  }

  document.addEventListener('DOMContentLoaded', () => {
    meta = M.get('meta.js');
    if (!meta) { M.showError('data/meta.js is missing: rebuild the site with `moeprint site RUN_DIR`.'); return; }
    M.header(meta);
    state = M.readState();
    window.addEventListener('hashchange', () => { state = M.readState(); render().catch(M.showError); });
    render().catch(M.showError);
  });
})();
