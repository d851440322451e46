"""A PyTorch replica of the hydrology pipeline's LSTM on CAMELS-US (4 basins),
used to find why the Rust pipeline's first runs stayed near NSE 0 (the
initialisation; see docs/benchmarks.md, "Accuracy: CAMELS-US"). Same split
(train < 2001-10-01 <= val < 2002-01-01 <= test), the same z-scoring with
training statistics, forcings of day T for the flow of day T, 12 attributes,
one LSTM layer, dropout on h_T, Adam with gradient clipping at 1.

Run with the benchmark venv (benches/setup-bench-venv.sh):
  THREADS=1 EP=15 BS=32 LR=1e-3 NSESTAR=1 DAYL=1 SCHED=1 [KINIT=1 FBV=5] \
      .venv-bench/bin/python benches/python/camels_lstm_prototype.py
Environment: SEQ (270), HID (256), DROP (0.4), EP, BS, LR, SEED (7); NSESTAR=1
NSE* loss; DAYL=1 adds the day length; SCHED=1 lr, then lr/2 from epoch EP/2
and lr/10 from 3EP/4; KINIT=1 Kratzert's init (orthogonal W_ih, identity
W_hh, forget bias FBV) instead of PyTorch's. Prints test NSE per basin
after every epoch (a diagnostic, not the protocol: the Rust benchmark keeps
the best validation epoch).
"""
import numpy as np, sys, os, time, datetime as dt, itertools
import torch, torch.nn as nn
torch.set_num_threads(int(os.environ.get("THREADS","2")))
root=os.path.join(os.environ.get("DEEPRC_DATA", os.path.join(os.path.dirname(__file__), "../../../shared/data")), "camels_us_4basins")
G=["01022500","01547700","02064000","03015500"]
ATTR=[("clim","p_mean"),("clim","pet_mean"),("clim","aridity"),("clim","frac_snow"),("clim","high_prec_freq"),("clim","low_prec_freq"),("topo","elev_mean"),("topo","slope_mean"),("topo","area_gages2"),("vege","frac_forest"),("soil","soil_depth_pelletier"),("soil","max_water_content")]
def attrs():
    out={g:{} for g in G}
    for f in set(a for a,_ in ATTR):
        lines=open(f"{root}/attributes/camels_{f}.txt").read().splitlines()
        h=[x.strip() for x in lines[0].split(";")]
        for l in lines[1:]:
            fs=[x.strip() for x in l.split(";")]
            if fs[0] in out:
                for a,c in ATTR:
                    if a==f: out[fs[0]][c]=float(fs[h.index(c)])
    return np.array([[out[g][c] for _,c in ATTR] for g in G])
A=attrs()
ep=dt.date(1970,1,1)
def forcing(g):
    d={}
    for l in open(f"{root}/daymet/{g}_lump_cida_forcing_leap.txt").read().splitlines()[4:]:
        p=l.split(); day=(dt.date(int(p[0]),int(p[1]),int(p[2]))-ep).days
        d[day]=([float(p[4])] if os.environ.get("DAYL") else [])+[float(p[5]),float(p[6]),float(p[8]),float(p[9]),float(p[10])]
    return d
def flow(g):
    d={}
    for l in open(f"{root}/usgs_streamflow/{g}_streamflow_qc.txt").read().splitlines():
        p=l.split(); day=(dt.date(int(p[1]),int(p[2]),int(p[3]))-ep).days
        v=float(p[4])
        if v>=0: d[day]=v
    return d
VAL=11596; TEST=11688
CF=0.028316846592*86400*1000/1e6
series=[]
for gi,g in enumerate(G):
    F=forcing(g); Q=flow(g); area=A[gi][8]
    days=sorted(set(F)&set(Q))
    X=np.array([F[d] for d in days]); y=np.array([Q[d]*CF/area for d in days])
    series.append((np.array(days),X,y))
T=int(os.environ.get("SEQ","270")); H=int(os.environ.get("HID","256")); DROP=float(os.environ.get("DROP","0.4"))
EP=int(os.environ.get("EP","30")); LR=float(os.environ.get("LR","1e-3")); BS=int(os.environ.get("BS","256"))
NSESTAR=os.environ.get("NSESTAR","0")=="1"
# stats over training rows
trX=np.concatenate([X[days<VAL] for days,X,_ in series]); trY=np.concatenate([y[days<VAL] for days,_,y in series])
mx,sx=trX.mean(0),trX.std(0); my,sy=trY.mean(),trY.std()
ma,sa=A.mean(0),A.std(0)+1e-9
def windows(lo,hi):
    xs,ss,ys,gs,ds=[],[],[],[],[]
    for gi,(days,X,y) in enumerate(series):
        Xn=(X-mx)/sx; yn=(y-my)/sy
        for i in range(T-1,len(days)):
            if days[i]-days[i-T+1]!=T-1: continue
            if lo<=days[i]<hi:
                xs.append(Xn[i-T+1:i+1]); ss.append((A[gi]-ma)/sa); ys.append(yn[i]); gs.append(gi); ds.append(days[i])
    return (torch.tensor(np.array(xs),dtype=torch.float32),torch.tensor(np.array(ss),dtype=torch.float32),torch.tensor(np.array(ys),dtype=torch.float32)[:,None],np.array(gs),np.array(ds))
tr=windows(0,VAL); va=windows(VAL,TEST); te=windows(TEST,10**9)
print("windows",len(tr[0]),len(va[0]),len(te[0]),flush=True)
# per-basin std of target for NSE*
bstd=np.array([((y[days<VAL]-my)/sy).std() for days,_,y in series])
class M(nn.Module):
    def __init__(s):
        super().__init__(); s.l=nn.LSTM(len(series[0][1][0])+12,H,batch_first=True); s.d=nn.Dropout(DROP); s.o=nn.Linear(H,1)
        if os.environ.get("KINIT"):
            with torch.no_grad():
                # Kratzert: W_ih orthogonal [in,4H] (f,i,o,g), W_hh eye x4, bias 0 but forget 5
                n_in=s.l.weight_ih_l0.shape[1]
                w=torch.empty(n_in,4*H); nn.init.orthogonal_(w)
                # torch order i,f,g,o = kratzert blocks 1,0,3,2
                order=torch.cat([torch.arange(b*H,(b+1)*H) for b in [1,0,3,2]])
                s.l.weight_ih_l0.copy_(w[:,order].t())
                s.l.weight_hh_l0.copy_(torch.eye(H).repeat(1,4)[:,order].t())
                s.l.bias_ih_l0.zero_(); s.l.bias_hh_l0.zero_(); s.l.bias_ih_l0[H:2*H]=float(os.environ.get("FBV","5"))
    def forward(s,x,st):
        z=torch.cat([x,st[:,None,:].expand(-1,x.shape[1],-1)],-1); h,_=s.l(z); return s.o(s.d(h[:,-1]))
torch.manual_seed(int(os.environ.get("SEED","7")))
m=M(); opt=torch.optim.Adam(m.parameters(),lr=LR)
def nse(pred,obs,g):
    r=[]
    for gi in range(4):
        k=g==gi; o=obs[k]; p=pred[k]; r.append(1-((o-p)**2).sum()/((o-o.mean())**2).sum())
    return np.array(r)
def evaluate(w):
    m.eval()
    with torch.no_grad(): p=m(w[0],w[1]).numpy()[:,0]
    m.train(); return p
best=(1e9,None); t0=time.time()
w=torch.tensor(1/(bstd[tr[3]]+0.1)**2,dtype=torch.float32)[:,None]
for e in range(EP):
    if os.environ.get('SCHED'):
        for g in opt.param_groups: g['lr']=LR if e<EP//2 else (LR/2 if e<3*EP//4 else LR/10)
    perm=torch.randperm(len(tr[0])); tl=0;n=0
    for i in range(0,len(perm),BS):
        b=perm[i:i+BS]; p=m(tr[0][b],tr[1][b]); 
        l=((p-tr[2][b])**2*(w[b] if NSESTAR else 1)).mean()
        opt.zero_grad(); l.backward(); nn.utils.clip_grad_norm_(m.parameters(),1.0); opt.step(); tl+=l.item(); n+=1
    pv=evaluate(va); vm=((pv-va[2].numpy()[:,0])**2).mean()
    pt=evaluate(te); ns=nse(pt*sy+my,te[2].numpy()[:,0]*sy+my,te[3])
    print(f"ep {e} loss {tl/n:.3f} val {vm:.3f} test NSE {np.round(ns,3)} median {np.median(ns):.3f} t {time.time()-t0:.0f}",flush=True)
    if vm<best[0]: best=(vm,ns)
print("best-val test NSE",np.round(best[1],3),"median",np.median(best[1]))
