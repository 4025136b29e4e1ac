# Independent reference values for tests/unit/test_evl_stats.c: run with
# /usr/bin/python3 tests/data/eval/stats_reference.py (stdlib only; the chance
# to beat is a numeric integral of the Beta densities, not the closed-form sum
# that evaluator/stats.c uses).
from statistics import NormalDist
import math
N=NormalDist(); z=N.inv_cdf(0.975)
print('z95 %.15f'%z)
def wilson(s,n):
    p=s/n; d=1+z*z/n; c=(p+z*z/(2*n))/d; h=z*math.sqrt(p*(1-p)/n+z*z/(4*n*n))/d
    return p,c-h,c+h
for s,n in [(0,10),(5,10),(81,263),(1,1000000)]:
    print('wilson',s,n,['%.12g'%x for x in wilson(s,n)])
def cmp(sc,nc,st,nt):
    pc=sc/nc; pt=st/nt
    se=math.sqrt(pc*(1-pc)/nc+pt*(1-pt)/nt); d=pt-pc
    rel=pt/pc-1; vr=pt*(1-pt)/nt/pc**2 + pt**2*pc*(1-pc)/nc/pc**4
    pool=(sc+st)/(nc+nt); sep=math.sqrt(pool*(1-pool)*(1/nc+1/nt)); zz=d/sep
    p=2*(1-N.cdf(abs(zz)))
    return d,d-z*se,d+z*se,rel,rel-z*math.sqrt(vr),rel+z*math.sqrt(vr),zz,p
for c in [(120,2400,150,2400),(4000,145000,4290,145000),(30,1000,18,1000)]:
    print('cmp',c,['%.12g'%x for x in cmp(*c)])
def beats(aa,ba,ab,bb,N_=400000):
    # P(Xb>Xa) = integral f_b(x) F_a(x) dx, midpoint grid over union of +-14 sd
    def mv(a,b): s=a+b; return a/s, math.sqrt(a*b/(s*s*(s+1)))
    ma,sa=mv(aa,ba); mb,sb=mv(ab,bb)
    lo=max(0.0,min(ma-14*sa,mb-14*sb)); hi=min(1.0,max(ma+14*sa,mb+14*sb))
    h=(hi-lo)/N_
    la=math.lgamma(aa)+math.lgamma(ba)-math.lgamma(aa+ba)
    lb=math.lgamma(ab)+math.lgamma(bb)-math.lgamma(ab+bb)
    def f(x,a,b,l): return math.exp((a-1)*math.log(x)+(b-1)*math.log1p(-x)-l) if 0<x<1 else 0.0
    Fa=0.0; tot=0.0
    # F_a at lo is ~0 (lo is 14 sd below both means or 0)
    prev=f(lo,aa,ba,la) if lo>0 else (1.0 if aa==1 else 0.0)*0
    for i in range(N_):
        x0=lo+i*h; xm=x0+h/2; x1=x0+h
        # F_a accumulate using Simpson on [x0,x1]
        fa0=f(x0,aa,ba,la) if x0>0 else (1/math.exp(la) if aa==1 else 0.0)
        fam=f(xm,aa,ba,la); fa1=f(x1,aa,ba,la) if x1<1 else (1/math.exp(la) if ba==1 else 0.0)
        Fm=Fa+(h/24)*(5*fa0+8*fam-fa1)
        tot+= h*f(xm,ab,bb,lb)*Fm
        Fa+=h/6*(fa0+4*fam+fa1)
    return tot
for a in [(1+120,1+2400-120,1+150,1+2400-150),(1+30,1+970,1+18,1+982),(3,9,5,7),(1+4000,1+141000,1+4290,1+140710)]:
    print('beats',a,'%.12g'%beats(*a))
def chi2sf(x,df):
    if df==1: return math.erfc(math.sqrt(x/2))
    if df==2: return math.exp(-x/2)
    if df==3: return math.erfc(math.sqrt(x/2))+math.sqrt(2*x/math.pi)*math.exp(-x/2)
    if df==4: return math.exp(-x/2)*(1+x/2)
for x,df in [(0.5,1),(3.84,1),(10.83,1),(13.8,2),(7.81,3),(20.0,4),(100.0,3)]:
    print('chi2',x,df,'%.15g'%chi2sf(x,df))
# SRM 145300 vs 144700 at 50/50
o=[145300,144700]; e=sum(o)/2; c2=sum((a-e)**2/e for a in o); print('srm',c2,'%.15g'%chi2sf(c2,1))
o=[1000,1100,900]; w=[0.5,0.3,0.2]; t=sum(o); c2=sum((a-t*ww)**2/(t*ww) for a,ww in zip(o,w)); print('srm3',c2,'%.15g'%chi2sf(c2,2))
