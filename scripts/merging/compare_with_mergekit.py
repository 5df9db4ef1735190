#!/usr/bin/python3
"""Cross-checks reference_merges.py against mergekit's own functions (not part of the tests; needs torch and a
mergekit checkout, whose files are read, never copied here):

    /usr/bin/python3 scripts/merging/compare_with_mergekit.py /path/to/mergekit

Prints, per method, max |reference − mergekit| / max |mergekit| over the cnn/default tensors. mergekit computes in
fp32 (the last lines repeat nuslerp in fp64: its fp32 acos of nearly parallel short rows loses digits). Methods whose
mergekit code draws torch random numbers (DARE, DELLA) are not compared: our masks are counter-based by design.
"""
import ast, os, sys, numpy as np, torch
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
MERGEKIT = os.path.join(sys.argv[1], "mergekit")
import reference_merges as R
import torch.nn.functional as F
from typing import *
def load_funcs(path, names, ns):
    tree = ast.parse(open(path).read())
    for node in tree.body:
        if isinstance(node,(ast.FunctionDef, ast.ClassDef)) and node.name in names:
            node.decorator_list=[]
            code = compile(ast.Module([node], []), path, 'exec'); exec(code, ns)
ns = {'torch': torch, 'F': F, 'np': np, 'Optional': Optional, 'List': List, 'Tuple': Tuple, 'Literal': Literal, 'Enum': __import__('enum').Enum, 'Union': Union, 'Tensor': torch.Tensor}
load_funcs(os.path.join(MERGEKIT, 'sparsify.py'), ['RescaleNorm','rescaled_masked_tensor','magnitude','magnitude_outliers'], ns)
load_funcs(os.path.join(MERGEKIT, 'merge_methods', 'generalized_task_arithmetic.py'), ['get_mask'], ns)
ns['sign_consensus_mask']=ns['get_mask']
load_funcs(os.path.join(MERGEKIT, 'merge_methods', 'sce.py'), ['sce_merge','sce_weight','sce_mask'], ns)
load_funcs(os.path.join(MERGEKIT, 'merge_methods', 'nuslerp.py'), ['nuslerp'], ns)
load_funcs(os.path.join(MERGEKIT, 'merge_methods', 'multislerp.py'), ['multislerp'], ns)
load_funcs(os.path.join(MERGEKIT, 'merge_methods', 'karcher.py'), ['karcher_merge_tensors'], ns)
load_funcs(os.path.join(MERGEKIT, 'merge_methods', 'nearswap.py'), ['nearswap_merge'], ns)
load_funcs(os.path.join(MERGEKIT, 'merge_methods', 'ram.py'), ['ram_merge','ramplus_tl_merge','_prepare_ram_vectors'], ns)
load_funcs(os.path.join(MERGEKIT, 'merge_methods', 'arcee_fusion.py'), ['DynamicThresholdFusion'], ns)
load_funcs(os.path.join(MERGEKIT, 'merge_methods', 'slerp.py'), ['slerp','lerp','normalize','maybe_torch'], ns)
models = {m: R.load(m) for m in ['base','ft1','ft2','ft3']}
T = lambda a: torch.from_numpy(np.array(a, dtype=np.float32))
worst = {}
def cmp(name, mine, theirs):
    mine = np.asarray(mine, dtype=np.float64); theirs = theirs.double().numpy() if isinstance(theirs, torch.Tensor) else np.asarray(theirs, dtype=np.float64)
    err = np.abs(mine - theirs).max() / max(np.abs(theirs).max(), 1e-30)
    worst[name] = max(worst.get(name, 0), err)
for tn, b in models['base'].items():
    xs = [models[m][tn] for m in ['ft1','ft2','ft3']]
    taus = [(x-b).astype(np.float32) for x in xs]
    for d, g in [(0.5,0.05),(0.8,0.1),(0.3,0.2),(0.6,0.01)]:
        for t in taus:
            cmp('magnitude', R.magnitude(t, d), ns['magnitude'](T(t), d))
            cmp('outliers', R.magnitude_outliers(t, d, g), ns['magnitude_outliers'](T(t), d, None, g))
            cmp('outliers_l1', R.magnitude_outliers(t, d, g, 'l1'), ns['magnitude_outliers'](T(t), d, ns['RescaleNorm'].l1, g))
    for k in [1.0, 0.3, 0.7]:
        cmp(f'sce{k}', R.sce(b, xs, k), ns['sce_merge']([T(x) for x in xs], T(b), select_topk=k))
    for flat, row in [(True, False), (False, False), (False, True)]:
        cmp(f'nuslerp{flat}{row}', R.nuslerp(None, xs[:2], [0.7, 0.3], row, flat), ns['nuslerp'](0.3, T(xs[0]), T(xs[1]), dim=0 if row else -1, flatten=flat))
        cmp(f'nuslerp_base{flat}{row}', R.nuslerp(b, xs[:2], [1.0, 3.0], row, flat), T(b) + ns['nuslerp'](0.75, T(xs[0])-T(b), T(xs[1])-T(b), dim=0 if row else -1, flatten=flat))
    cmp('multislerp', R.multislerp(None, xs, [0.5, 0.2, 0.3]), ns['multislerp']([T(x) for x in xs], [0.5,0.2,0.3]))
    cmp('multislerp_base', R.multislerp(b, xs, [1.,1.,2.]), ns['multislerp']([T(x) for x in xs], [1.,1.,2.], base_tensor=T(b)))
    cmp('karcher', R.karcher(xs), ns['karcher_merge_tensors']([T(x) for x in xs], [1/3]*3))
    cmp('karcher4', R.karcher(xs[:2]+[b], 20, 1e-7), ns['karcher_merge_tensors']([T(xs[0]),T(xs[1]),T(b)], [1/3]*3, 20, 1e-7))
    cmp('nearswap', R.nearswap(b, xs[0], 0.01), ns['nearswap_merge']([T(xs[0])], T(b), 0.01))
    cmp('ram', R.ram(b, xs, 0.01), ns['ram_merge']([T(x) for x in xs], T(b), 0.01))
    cmp('ramplus', R.ramplus_tl(b, xs, 0.5, 0.5, 0.01), ns['ramplus_tl_merge']([T(x) for x in xs], T(b), 0.5, 0.5, 0.01))
    cmp('slerp', R.slerp(0.3, b, xs[0]), ns['slerp'](0.3, T(b), T(xs[0])))
    # arcee fusion task body
    a_, b_ = T(b), T(xs[1])
    diff = (b_ - a_).abs(); p = F.softmax(b_, dim=-1) + 1e-8; q = F.softmax(a_, dim=-1) + 1e-8
    imp = diff * torch.sum(p * torch.log(p / q), dim=-1).unsqueeze(-1)
    mask, _ = ns['DynamicThresholdFusion']().compute_fusion_mask(imp)
    cmp('arcee', R.arcee_fusion(b, xs[1]), a_ + (b_ - a_) * mask)
for k, v in sorted(worst.items()): print(f'{k:28s} {v:.2e}')
print('--- nuslerp in fp64 torch')
worst.clear()
D = lambda a: torch.from_numpy(np.array(a, dtype=np.float64))
for tn, b in models['base'].items():
    xs = [models[m][tn] for m in ['ft1','ft2','ft3']]
    cmp('nuslerp64', R.nuslerp(None, xs[:2], [0.7, 0.3], False, False), ns['nuslerp'](0.3, D(xs[0]), D(xs[1]), dim=-1, flatten=False))
    cmp('nuslerp_base64', R.nuslerp(b, xs[:2], [1.0, 3.0], False, False), D(b) + ns['nuslerp'](0.75, D(xs[0])-D(b), D(xs[1])-D(b), dim=-1, flatten=False))
for k, v in sorted(worst.items()): print(f'{k:28s} {v:.2e}')
