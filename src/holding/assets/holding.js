(function(){"use strict";
var L=__USHER_L10N__,d=document,e0=d.getElementById("u-data"),D=e0?e0.dataset:{};
function $(i){return d.getElementById(i)}
function set(i,v){var e=$(i);if(e&&e.textContent!==v)e.textContent=v}
function show(i,on){var e=$(i);if(e)e.hidden=!on}
function grp(n){return String(n).replace(/\B(?=(\d{3})+(?!\d))/g,",")}
function two(n){return(n<10?"0":"")+n}
function eta(s){if(s==null)return L.unk;if(s<60)return L.soon;var m=Math.ceil(s/60);return m<90?L.min.replace("#",m):L.hr.replace("#",Math.floor(m/60)).replace("%",m%60)}
function cd(s){var n=Math.floor(s/86400);return(n?n+L.day+" ":"")+two(Math.floor(s/3600)%24)+":"+two(Math.floor(s/60)%60)+":"+two(s%60)}
function local(e,o){if(!e)return;var t=new Date(e.getAttribute("datetime"));if(!isNaN(t))e.textContent=o?t.toLocaleString(L.lang,o):t.toLocaleTimeString(L.lang)}
// Only a same-origin path: one leading slash, no backslash, space or control.
var ret=D.ret||"/";if(!/^\/(?![\/\\])[^\\\x00-\x20\x7f]*$/.test(ret))ret="/";
var state=D.state,refresh=+D.refresh||5,first=+D.first||0,errs=0,timer,end,busy,stop,solving,sent;
if(state==="admitted"){location.replace(ret);return}
local($("u-upd"));local($("u-at"),{year:"numeric",month:"short",day:"numeric",hour:"2-digit",minute:"2-digit"});
function tick(){var s=Math.max(0,Math.round((end-Date.now())/1000));set("u-cdv",cd(s));
if(s>0)setTimeout(tick,1000);else setTimeout(poll,Math.random()*Math.min(refresh,5)*1000)}
if(state==="prequeue"&&D.opens){end=Date.now()+D.opens*1000;tick()}
function sched(){clearTimeout(timer);if(stop)return;
timer=setTimeout(poll,refresh*Math.min(8,Math.pow(2,errs))*(800+Math.random()*400))}
// Over the address's ticket limit: find n with SHA-256(c+"."+n) starting
// with b zero bits, in batches that yield to the page; then poll with it.
function zb(h,b){for(var i=0;b>0;i++,b-=8)if(b>=8?h[i]:h[i]>>8-b)return 0;return 1}
function pow(c,b){var s=window.crypto&&crypto.subtle,t=new TextEncoder(),n=0;
if(!s){sched();return}solving=1;set("u-pos",L.prep);
(function run(){var ps=[];for(var i=0;i<64;i++)ps.push(s.digest("SHA-256",t.encode(c+"."+(n+i))));
Promise.all(ps).then(function(hs){for(var i=0;i<64;i++)if(zb(new Uint8Array(hs[i]),b)){
d.cookie="usher_pow="+c+"."+(n+i)+";path=/;max-age=120;samesite=lax"+(location.protocol==="https:"?";secure":"");
solving=0;sent=1;poll();return}n+=64;setTimeout(run,0)})})()}
function apply(j){errs=0;
if(sent){sent=0;d.cookie="usher_pow=;path=/;max-age=0"}
if(j.state==="admitted"){stop=1;location.replace(ret);return}
if(j.state!==state){stop=1;location.reload();return}
if(j.challenge){pow(j.challenge,j.difficulty);return}
if(j.refresh_seconds>0)refresh=j.refresh_seconds;
var p=j.position,n=j.vouchers_left,m=j.message||"",u=$("u-upd"),b=$("u-bar");
if(p!=null){set("u-pos",grp(p));var f=first||p,v=f>0?Math.min(100,Math.max(0,Math.floor((f-p)*100/f))):0;
if(b&&b.value!==v){b.value=v;b.textContent=v+"%"}}
if(p!=null||j.eta_known)set("u-eta",eta(j.eta_known?j.eta_seconds:null));
show("u-v",n!=null);if(n!=null)set("u-vn",grp(n));
// A new announcement goes to the always-present, visually hidden live
// region u-say once, when the text changes (not on every poll, not at
// load): a region shown or made at the moment it changes may go unread.
if(m!==said){said=m;set("u-say",m)}
set("u-msg",m);if($("u-msgb"))show("u-msgb",!!m.trim());else show("u-msg",!!m.trim());
var mt=$("u-msgt"),ma=j.message_updated_at;if(mt&&ma&&mt.getAttribute("datetime")!==ma){mt.setAttribute("datetime",ma);local(mt)}
show("u-msgw",!!(ma&&m.trim()));
if(u){u.setAttribute("datetime",new Date().toISOString());local(u)}}
function poll(){if(busy||stop||solving)return;busy=1;
fetch("/__usher/status?wait=1",{headers:{Accept:"application/json"},credentials:"same-origin",cache:"no-store"})
.then(function(r){if(!r.ok)throw r.status;return r.json()}).then(apply)
.catch(function(){errs++}).then(function(){busy=0;sched()})}
local($("u-msgt"));var said=$("u-msg")?$("u-msg").textContent:"";
// Feedback without leaving the page (the form also posts without script).
var fb=$("u-fbf");if(fb&&window.fetch&&window.URLSearchParams)fb.addEventListener("submit",function(ev){ev.preventDefault();
fetch(fb.action,{method:"POST",body:new URLSearchParams(new FormData(fb)),headers:{Accept:"application/json"},credentials:"same-origin"})
.then(function(r){set("u-fbr",r.ok?L.fb_ok:r.status===429?L.fb_limited:L.fb_failed);if(r.ok)fb.reset()})
.catch(function(){set("u-fbr",L.fb_failed)})});
D.pow?pow(D.pow,+D.bits):sched()})();
