"""A real three-instance Asterisk 22 lab on loopback.

- ``pbx``      (127.0.0.11): an office's Asterisk (phones, dialplan, AMI/ARI users of its own) into
  which ``novofon-bridge asterisk install`` wired our asterisk-conf/ snippets, then edited as the
  README says (trunk login, DID routes). This is the Asterisk novofon-bridge watches.
- ``provider`` (127.0.0.12): plays Novofon — a registrar with digest auth for the trunk, numbers
  that answer, are busy or never answer, and a way to place inbound calls towards the PBX.
- ``phones``   (127.0.0.13): plays the employees' handsets, registered to the PBX as 101…105
  (101 answers and stays; 102 answers and hangs up after 3 s; 103 never answers; 104 is busy;
  105 answers and waits for the test to drive it: transfers by SIP REFER, see tests/lab/calls.py)
  and able to dial out as any of them.

The PBX comes in two profiles (``Lab(profile=…)``, ``up --profile``): ``plain`` (below) and
``freepbx`` (tests/lab/freepbx.py: FreePBX 17's generated dialplan, ``install --freepbx``).

Rendering only substitutes addresses, credentials and DID routes in the installed snippets, so a
broken snippet or installer breaks the tests.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from tests.lab.provision import mount, provision, umount

REPO = Path(__file__).resolve().parents[2]

# Several labs can run side by side on one machine (developers' parallel runs, other projects):
# NOVOFON_LAB_SLOT=N moves this one to 127.0.N.11-13, /labN inside the chroot and its own RTP ports.
SLOT = int(os.environ.get("NOVOFON_LAB_SLOT", "0"))
if not 0 <= SLOT <= 7:
    raise SystemExit("NOVOFON_LAB_SLOT must be 0..7")
PBX_IP, PROVIDER_IP, PHONES_IP = (f"127.0.{SLOT}.{n}" for n in (11, 12, 13))
AMI_PORT = 5038
AMI_USER = "novofon-bridge"
AMI_SECRET = "lab-ami-secret"
ARI_PORT = 8088  # http.conf's port, on the lab PBX's own address
ARI_PASSWORD = "lab-ari-password"
TRUNK_LOGIN = "712345"
TRUNK_PASSWORD = "lab-trunk-password"
EXTENSIONS = ("101", "102", "103", "104", "105")
# The office's Asterisk: "plain" (its own dialplan + novofon-bridge asterisk install) or "freepbx"
# (a FreePBX 17 dialplan, tests/lab/freepbx.py, + asterisk install --freepbx). Same provider/phones.
PROFILES = ("plain", "freepbx")

# DIDs the provider can call: each routes to one behaviour on the PBX.
DID_GROUP = "74950000100"  # rings 101 and 102 together
DID_101 = "74950000101"  # answers
DID_103 = "74950000103"  # never answers
DID_104 = "74950000104"  # busy
DID_QUEUE = "74950000105"  # a Queue (member 103 via Local, never answers) that gives up after QUEUE_TIMEOUT s
DID_LOCAL_GROUP = "74950000106"  # a ring group of Local/…@from-internal channels (103, 104): no answer
DID_LONG = "74950000107"  # 103 rings for LONG_RING_TIMEOUT s (a call still ringing across a restart)
DID_ROUTED = "74950000108"  # asks novofon-bridge (AGI) whom to ring first; else rings 103 (no answer)
DID_FORWARD = "74950000109"  # forwarded through the trunk to NUM_MOBILE (follow-me)
DID_IVR = "74950000110"  # answered by the PBX itself (Answer, Playback, WaitExten 30)
DID_VOICEMAIL = "74950000111"  # rings 103 for RING_TIMEOUT s, then voicemail
DID_TRANSFER = "74950000112"  # rings 105 only (105 answers; the test then transfers)
# Rings 101, recorded as FreePBX names recordings: monitor/YYYY/MM/DD/in-<DID>-<caller>-<time>-<uniqueid>.wav
DID_RECORDED_FREEPBX = "74950000120"
DID_ROUTES = {
    DID_GROUP: "PJSIP/101&PJSIP/102",
    DID_101: "PJSIP/101",
    DID_103: "PJSIP/103",
    DID_104: "PJSIP/104",
    DID_ROUTED: "PJSIP/103",
    DID_TRANSFER: "PJSIP/105",
}
# Only DID_ROUTED asks the daemon (the other DIDs keep their exact records); the daemon under
# test listens for FastAGI on this lab's own port.
AGI_PORT = 4573 + SLOT

RING_TIMEOUT = 4  # seconds extensions ring on an inbound call
QUEUE_TIMEOUT = 3  # seconds the lab queue rings before it gives up
GROUP_TIMEOUT = 3  # seconds the Local ring group rings (shorter than the members' own Dial)
LONG_RING_TIMEOUT = 60
DIAL_TIMEOUT = 5  # seconds an outbound call rings before "no answer"

# Numbers the provider answers for outbound calls.
NUM_ANSWER = "79001110001"
NUM_BUSY = "79002220002"
NUM_NOANSWER = "79003330003"
NUM_TEST = "79991234567"  # the sysadmin's test number from SPECS.md; answers
NUM_MOBILE = "79004440004"  # an employee's mobile phone: rings 1 s, answers, echoes

# The number clients see on outbound calls (plain: NOVOFON_CALLERID in [novofon-settings]).
LAB_OUTBOUND_CID = "74950000100"

LAB_ROUTES = f"""exten => {DID_QUEUE},1,NoOp(lab: a queue that gives up after {QUEUE_TIMEOUT} s)
 same => n,Gosub(novofon-settings,s,1)
 same => n,Gosub(novofon-record,s,1)
 same => n,Queue(lab-queue,,,,{QUEUE_TIMEOUT})
 same => n,Hangup()
exten => {DID_LOCAL_GROUP},1,NoOp(lab: a ring group of Local channels)
 same => n,Gosub(novofon-settings,s,1)
 same => n,Gosub(novofon-record,s,1)
 same => n,Dial(Local/103@from-internal&Local/104@from-internal,{GROUP_TIMEOUT})
 same => n,Hangup()
exten => {DID_RECORDED_FREEPBX},1,NoOp(lab: recorded as FreePBX does, into dated folders)
 same => n,Gosub(novofon-settings,s,1)
 same => n,Set(__YEAR=${{STRFTIME(${{EPOCH}},,%Y)}})
 same => n,Set(__MONTH=${{STRFTIME(${{EPOCH}},,%m)}})
 same => n,Set(__DAY=${{STRFTIME(${{EPOCH}},,%d)}})
 same => n,Set(NOW=${{STRFTIME(${{EPOCH}},,%Y%m%d-%H%M%S)}})
 same => n,Set(__CALLFILENAME=in-${{EXTEN}}-${{CALLERID(num)}}-${{NOW}}-${{UNIQUEID}})
 same => n,Set(CDR(recordingfile)=${{CALLFILENAME}}.wav)
 same => n,MixMonitor(${{YEAR}}/${{MONTH}}/${{DAY}}/${{CALLFILENAME}}.wav,b)
 same => n,Dial(PJSIP/101,{RING_TIMEOUT})
 same => n,Goto(novofon-dial-result,${{DIALSTATUS}},1)
exten => {DID_LONG},1,NoOp(lab: rings 103 for a long time)
 same => n,Gosub(novofon-settings,s,1)
 same => n,Gosub(novofon-record,s,1)
 same => n,Dial(PJSIP/103,{LONG_RING_TIMEOUT})
 same => n,Goto(novofon-dial-result,${{DIALSTATUS}},1)
exten => {DID_FORWARD},1,NoOp(lab: forwarded to an employee's mobile through the office's outgoing route)
 same => n,Gosub(novofon-settings,s,1)
 same => n,Gosub(novofon-record,s,1)
 same => n,Dial(Local/{NUM_MOBILE}@novofon-outgoing,${{NOVOFON_DIAL_TIMEOUT}})
 same => n,Goto(novofon-dial-result,${{DIALSTATUS}},1)
exten => {DID_IVR},1,NoOp(lab: a voice menu the PBX answers itself)
 same => n,Gosub(novofon-settings,s,1)
 same => n,Answer()
 same => n,Playback(hello-world)
 same => n,WaitExten(30)
 same => n,Hangup()
exten => {DID_VOICEMAIL},1,NoOp(lab: rings 103, then voicemail)
 same => n,Gosub(novofon-settings,s,1)
 same => n,Gosub(novofon-record,s,1)
 same => n,Dial(PJSIP/103,{RING_TIMEOUT})
 same => n,VoiceMail(103@default,su)
 same => n,Hangup()
"""

# Feature codes the office's phones dial, as FreePBX's: **<ext> picks up <ext>'s ringing call,
# *8 any ringing call of the phone's pickup group (every handset is in call/pickup group 1).
PICKUP_DIRECTED = "**"
PICKUP_GROUP = "*8"

MODULES = [
    "res_pjproject.so",
    "res_sorcery_config.so",
    "res_sorcery_memory.so",
    "res_sorcery_astdb.so",
    "res_pjsip.so",
    "res_pjsip_session.so",
    "res_pjsip_pubsub.so",
    "chan_pjsip.so",
    "res_pjsip_authenticator_digest.so",
    "res_pjsip_outbound_authenticator_digest.so",
    "res_pjsip_endpoint_identifier_ip.so",
    "res_pjsip_endpoint_identifier_user.so",
    "res_pjsip_registrar.so",
    "res_pjsip_outbound_registration.so",
    "res_pjsip_sdp_rtp.so",
    "res_pjsip_caller_id.so",
    "res_pjsip_rfc3326.so",
    "res_pjsip_nat.so",
    "res_pjsip_logger.so",
    "res_pjsip_header_funcs.so",
    "res_rtp_asterisk.so",
    "res_timing_timerfd.so",
    "codec_ulaw.so",
    "codec_alaw.so",
    "codec_a_mu.so",
    "codec_gsm.so",
    "format_gsm.so",
    "format_wav.so",
    "format_pcm.so",
    "pbx_config.so",
    "app_dial.so",
    "app_queue.so",
    "cdr_csv.so",
    "func_cdr.so",
    "app_playback.so",
    "app_echo.so",
    "app_mixmonitor.so",
    "app_voicemail.so",  # DID_VOICEMAIL: VoiceMail() after nobody answered
    "app_record.so",
    "app_stack.so",
    "app_exec.so",
    "res_speech.so",
    "res_agi.so",
    "func_module.so",
    "app_verbose.so",
    "func_callerid.so",
    "func_strings.so",
    "func_logic.so",
    "func_global.so",
    "func_channel.so",
    "func_hangupcause.so",
    "func_cut.so",
    "bridge_simple.so",
    "bridge_native_rtp.so",
    "res_pjsip_refer.so",  # transfers by SIP REFER (blind, and attended with Replaces)
    "app_transfer.so",  # Transfer(): how a lab handset sends its REFER
    "app_directed_pickup.so",  # Pickup() / PickupChan(): **<ext> and *8
    "res_clioriginate.so",
    "res_http_websocket.so",
    "res_websocket_client.so",
    "res_stasis.so",
    "app_stasis.so",  # Stasis(): how an ARI originate puts the channel into our application
    "res_stasis_answer.so",
    "res_stasis_playback.so",
    "res_stasis_recording.so",
    "res_stasis_snoop.so",
    "res_ari.so",
    "res_ari_model.so",
    "res_ari_channels.so",
    "res_ari_events.so",
    "res_ari_applications.so",
    "res_ari_asterisk.so",
    "res_ari_bridges.so",
]


@dataclass(frozen=True)
class Instance:
    name: str
    ip: str
    rtp_start: int

    @property
    def base(self) -> str:
        """Folder of this instance inside the chroot."""
        return f"/lab{SLOT or ''}/{self.name}"


PBX = Instance("pbx", PBX_IP, 20000 + SLOT * 3000)
PROVIDER = Instance("provider", PROVIDER_IP, 21000 + SLOT * 3000)
PHONES = Instance("phones", PHONES_IP, 22000 + SLOT * 3000)
INSTANCES = (PBX, PROVIDER, PHONES)


def _log(msg: str) -> None:
    print(f"[lab] {msg}", file=sys.stderr, flush=True)


class LabError(RuntimeError):
    pass


def _sub(text: str, old: str, new: str) -> str:
    """Replace ``old`` with ``new``; a template that lost ``old`` breaks the lab loudly."""
    if old not in text:
        raise LabError(f"asterisk-conf snippet no longer contains {old!r}")
    return text.replace(old, new)


def office_config() -> dict[str, str]:
    """What the office's Asterisk already holds before novofon-bridge: phones 101-104 and a fax,
    their dialplan and other contexts, an AMI user and an ARI user of its own."""
    phones = "".join(
        f"""
[{ext}](phone)
auth={ext}
aors={ext}
callerid=Employee {ext} <{ext}>
[{ext}](phone-auth)
username={ext}
password=lab-phone-{ext}
[{ext}](phone-aor)
"""
        for ext in EXTENSIONS
    )
    return {
        "pjsip.conf": f"""; The office's own PJSIP settings.
[global]
type=global
user_agent=Office PBX

[transport-udp]
type=transport
protocol=udp
bind={PBX_IP}:5060

[phone](!)
type=endpoint
transport=transport-udp
context=from-internal
disallow=all
allow=alaw,ulaw
direct_media=no
rtp_symmetric=yes
force_rport=yes
rewrite_contact=yes
call_group=1
pickup_group=1

[phone-auth](!)
type=auth
auth_type=userpass

[phone-aor](!)
type=aor
max_contacts=1
remove_existing=yes
qualify_frequency=60
{phones}
; A fax machine that is not plugged in today.
[fax](phone)
auth=fax
aors=fax
callerid=Fax <200>
[fax](phone-auth)
username=fax
password=lab-fax-password
[fax](phone-aor)
""",
        "extensions.conf": f"""; The office's own dialplan.
[general]
static=yes
writeprotect=no

[globals]
OFFICE=Lab office

[from-internal]
; Office phones: three digits ring a colleague, anything longer goes out through Novofon.
exten => _XXX,1,Dial(PJSIP/${{EXTEN}},{RING_TIMEOUT})
 same => n,Goto(office-dial-result,${{DIALSTATUS}},1)
exten => _X.,1,Goto(novofon-outgoing,${{EXTEN}},1)
exten => _+X.,1,Goto(novofon-outgoing,${{EXTEN:1}},1)
; Call pickup, FreePBX's codes: **<ext> picks up that phone's ringing call (a colleague's call
; dialled here, else whatever rings it), *8 any ringing call of the phone's pickup group.
exten => _{PICKUP_DIRECTED}XXX,1,Pickup(${{EXTEN:2}}@from-internal)
 same => n,PickupChan(PJSIP/${{EXTEN:2}})
 same => n,Hangup()
exten => {PICKUP_GROUP},1,Pickup()
 same => n,Hangup()

[office-dial-result]
exten => BUSY,1,Hangup(17)
exten => NOANSWER,1,Hangup(19)
exten => CONGESTION,1,Hangup(34)
exten => CHANUNAVAIL,1,Hangup(20)
exten => _X.,1,Hangup()

[night-service]
exten => s,1,Answer()
 same => n,Playback(hello-world)
 same => n,Hangup()
""",
        "manager.conf": f"""[general]
enabled = yes
port = {AMI_PORT}
bindaddr = {PBX_IP}
displayconnects = no
timestampevents = yes

; The office's operator panel.
[panel]
secret = lab-panel-secret
deny = 0.0.0.0/0.0.0.0
permit = 127.0.0.1/255.255.255.255
read = call
write = call
""",
        "ari.conf": """[general]
enabled = yes
pretty = no

[dashboard]
type = user
read_only = yes
password = lab-dashboard
password_format = plain
""",
        "http.conf": f"""[general]
enabled = yes
bindaddr = {PBX_IP}
bindport = 8088
""",
    }


class Lab:
    def __init__(self, root: Path | None = None, profile: str = "plain") -> None:
        if profile not in PROFILES:
            raise LabError(f"unknown lab profile {profile!r}: one of {', '.join(PROFILES)}")
        self.profile = profile
        self.running = False
        self.root = root or provision()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.pristine: dict[str, bytes] = {}  # the office's files before novofon-bridge

    # ---- paths -------------------------------------------------------------------------------
    @property
    def moddir(self) -> str:
        """Asterisk's module folder inside the chroot (multiarch: x86_64-linux-gnu, aarch64-...)."""
        found = sorted(self.root.glob("usr/lib/*/asterisk/modules"))
        if not found:
            raise LabError(f"no Asterisk modules under {self.root}/usr/lib/*/asterisk/modules")
        return "/" + str(found[0].relative_to(self.root))

    def host_path(self, inst: Instance, *parts: str) -> Path:
        return self.root / inst.base.lstrip("/") / Path(*parts)

    @property
    def recordings_dir(self) -> Path:
        return self.host_path(PBX, "spool", "monitor")

    @property
    def pbx_recordings_dir(self) -> str:
        """The same folder as the lab's Asterisk names it (inside its chroot): MIXMONITOR_FILENAME."""
        return f"{PBX.base}/spool/monitor"

    @property
    def cdr_csv(self) -> Path:
        """cdr_csv's Master.csv of the lab PBX."""
        return self.host_path(PBX, "log", "cdr-csv", "Master.csv")

    # ---- rendering ---------------------------------------------------------------------------
    def render(self) -> None:
        for inst in INSTANCES:
            base = self.host_path(inst)
            shutil.rmtree(base, ignore_errors=True)
            for sub in ("etc", "run", "log/cdr-csv", "spool/monitor", "lib", "db"):
                (base / sub).mkdir(parents=True, exist_ok=True)
            self._common(inst)
        self._render_pbx()
        self._render_provider()
        self._render_phones()

    def _write(self, inst: Instance, name: str, text: str) -> None:
        self.host_path(inst, "etc", name).write_text(text)

    def _common(self, inst: Instance) -> None:
        b = inst.base
        self._write(
            inst,
            "asterisk.conf",
            f"""[directories]
astetcdir => {b}/etc
astmoddir => {self.moddir}
astvarlibdir => {b}/lib
astdbdir => {b}/db
astkeydir => {b}/lib
astdatadir => /usr/share/asterisk
astagidir => /usr/share/asterisk/agi-bin
astspooldir => {b}/spool
astrundir => {b}/run
astlogdir => {b}/log
astsbindir => /usr/sbin

[options]
systemname = {inst.name}
maxfiles = 4096
""",
        )
        extra = freepbx().EXTRA_MODULES if inst is PBX and self.profile == "freepbx" else []
        modules = "\n".join(f"load = {m}" for m in dict.fromkeys([*MODULES, *extra]))
        self._write(inst, "modules.conf", f"[modules]\nautoload = no\n{modules}\n")
        self._write(
            inst,
            "logger.conf",
            "[general]\n[logfiles]\nmessages => notice,warning,error,verbose(3)\n",
        )
        self._write(
            inst,
            "rtp.conf",
            f"[general]\nrtpstart = {inst.rtp_start}\nrtpend = {inst.rtp_start + 998}\n",
        )
        self._write(
            inst,
            "indications.conf",
            "[general]\ncountry=ru\n[ru]\ndescription=Russia\n"
            "ringcadence=800,3200\ndial=425\nbusy=425/350,0/350\nring=425/800,0/3200\n"
            "congestion=425/175,0/175\ncallwaiting=425/200,0/5000\n",
        )
        # CDR as Debian ships it: cdr_csv appends to <astlogdir>/cdr-csv/Master.csv, times in UTC.
        self._write(
            inst,
            "cdr.conf",
            "[general]\nenable = yes\n[csv]\nusegmtime = yes\nloguniqueid = yes\nloguserfield = yes\n"
            "accountlogs = no\n",
        )
        for empty in (
            "cel.conf",
            "features.conf",
            "musiconhold.conf",
            "ccss.conf",
            "udptl.conf",
            "acl.conf",
            "websocket_client.conf",
            "pjproject.conf",
            "sorcery.conf",
            "stasis.conf",
        ):
            self._write(inst, empty, "")
        self._write(inst, "http.conf", "[general]\nenabled = no\n")
        self._write(inst, "ari.conf", "[general]\nenabled = no\n")
        if inst is not PBX:
            self._write(
                inst,
                "manager.conf",
                f"""[general]
enabled = yes
port = {AMI_PORT}
bindaddr = {inst.ip}
timestampevents = yes
[lab]
secret = lab
read = all
write = all
""",
            )

    # The PBX's configuration is built the way a sysadmin gets it: the office's own settings (phones,
    # dialplan, an AMI and an ARI user of their own), then "novofon-bridge asterisk install" (the CLI
    # itself, against this etc folder), then the edits the README asks for in novofon-bridge_*.conf.
    ADMIN_FILES = ("pjsip.conf", "extensions.conf", "manager.conf", "ari.conf", "http.conf")

    @property
    def env_file(self) -> Path:
        """The lab's stand-in for /etc/novofon-bridge/env (the secrets install puts into Asterisk)."""
        return self.host_path(PBX, "novofon-bridge.env")

    def _render_pbx(self) -> None:
        office = freepbx().office_config() if self.profile == "freepbx" else office_config()
        for name, text in office.items():
            self._write(PBX, name, text)
        etc = self.host_path(PBX, "etc")
        # FreePBX: every file of /etc/asterisk (install --freepbx may only append to *_custom.conf).
        names = (
            [p.name for p in etc.iterdir() if p.is_file()] if self.profile == "freepbx" else self.ADMIN_FILES
        )
        self.pristine = {name: (etc / name).read_bytes() for name in names}
        self.env_file.write_text(f"AMI_SECRET={AMI_SECRET}\nARI_PASSWORD={ARI_PASSWORD}\n")
        self.install_bridge()

    def bridge_cli(self, *args: str) -> str:
        """Run ``novofon-bridge asterisk ARGS --etc <the PBX's etc>`` as a sysadmin would."""
        env = {**os.environ, "NOVOFON_BRIDGE_ENV": str(self.env_file)}
        etc = str(self.host_path(PBX, "etc"))
        cmd = [sys.executable, "-m", "bridge", "asterisk", *args, "--etc", etc]
        done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise LabError(f"{' '.join(cmd)} exited with {done.returncode}:\n{done.stdout}{done.stderr}")
        return done.stdout

    def install_bridge(self) -> str:
        if self.profile == "freepbx":
            out = self.bridge_cli("install", "--freepbx")
            freepbx().configure(self)
            return out
        out = self.bridge_cli("install")
        self.configure_bridge()
        return out

    def configure_bridge(self) -> None:
        """The sysadmin's edits after install: trunk login, DID routes, short lab timeouts."""
        pjsip = self.host_path(PBX, "etc", "novofon-bridge_pjsip.conf")
        text = _sub(pjsip.read_text(), "YOUR_SIP_LOGIN_HERE", TRUNK_LOGIN)
        text = _sub(text, "YOUR_SIP_PASSWORD_HERE", TRUNK_PASSWORD)
        pjsip.write_text(_sub(text, "sip.novofon.ru", PROVIDER_IP))

        ext = self.host_path(PBX, "etc", "novofon-bridge_extensions.conf")
        routes = "".join(f"exten => {did},1,Return({target})\n" for did, target in DID_ROUTES.items())
        text = _sub(ext.read_text(), "[novofon-routes]\n", f"[novofon-routes]\n{routes}")
        # Only DID_ROUTED asks the daemon, on this lab's own AGI port.
        text = _sub(text, "NOVOFON_ROUTE_CALLS=yes", "NOVOFON_ROUTE_CALLS=no")
        routed = f"exten => {DID_ROUTED},1,Return(yes)\n"
        text = _sub(text, "[novofon-route-calls]\n", f"[novofon-route-calls]\n{routed}")
        text = _sub(text, "agi://127.0.0.1:4573/", f"agi://127.0.0.1:{AGI_PORT}/")
        text = _sub(
            text,
            "NOVOFON_RECORDINGS_DIR=/var/spool/asterisk/monitor",
            f"NOVOFON_RECORDINGS_DIR={PBX.base}/spool/monitor",
        )
        # The number clients see on outbound calls, as the README asks the sysadmin to set it.
        text = _sub(text, "Set(NOVOFON_CALLERID=)", f"Set(NOVOFON_CALLERID={LAB_OUTBOUND_CID})")
        # Short timeouts so that "no answer" tests take seconds, not a minute.
        text = _sub(text, "NOVOFON_RING_TIMEOUT=30", f"NOVOFON_RING_TIMEOUT={RING_TIMEOUT}")
        text = _sub(text, "NOVOFON_DIAL_TIMEOUT=60", f"NOVOFON_DIAL_TIMEOUT={DIAL_TIMEOUT}")
        # Routes that are no Dial() target, as FreePBX builds them: exact DIDs in front of the
        # snippet's _X. pattern. After the PBX gives up it hangs up normally (cause 16), as a
        # FreePBX "Terminate Call" destination does: only who ended the ringing tells "no answer"
        # from "cancel".
        ext.write_text(_sub(text, "[from-novofon]\n", "[from-novofon]\n" + LAB_ROUTES))
        # Queue members as FreePBX writes them (Local/<ext>@…/n): ringable whatever PJSIP's device
        # state says (after a crash of Asterisk a PJSIP/103 member stays "Unavailable" for a while).
        self._write(
            PBX,
            "queues.conf",
            "[general]\nshared_lastcall = no\n\n[lab-queue]\nstrategy = ringall\ntimeout = 15\n"
            "retry = 1\njoinempty = yes\nleavewhenempty = no\nmember => Local/103@from-internal/n\n",
        )
        # DID_VOICEMAIL's mailbox (messages go to <spool>/voicemail/default/103).
        self._write(
            PBX,
            "voicemail.conf",
            "[general]\nformat = wav\nmaxsecs = 60\n\n[default]\n103 => 1234,Employee 103\n",
        )

    def _render_provider(self) -> None:
        self._write(
            PROVIDER,
            "pjsip.conf",
            f"""[transport-udp]
type=transport
protocol=udp
bind={PROVIDER_IP}:5060

[{TRUNK_LOGIN}]
type=auth
auth_type=userpass
username={TRUNK_LOGIN}
password={TRUNK_PASSWORD}

[{TRUNK_LOGIN}]
type=aor
max_contacts=1
remove_existing=yes

[{TRUNK_LOGIN}]
type=endpoint
transport=transport-udp
context=from-pbx
disallow=all
allow=alaw,ulaw
auth={TRUNK_LOGIN}
aors={TRUNK_LOGIN}
direct_media=no
trust_id_inbound=yes
""",
        )
        self._write(
            PROVIDER,
            "extensions.conf",
            f"""[from-pbx]
; The "phone network" behind Novofon.
exten => {NUM_ANSWER},1,Ringing()
 same => n,Wait(1)
 same => n,Answer()
 same => n,Echo()
exten => {NUM_TEST},1,Goto({NUM_ANSWER},1)
exten => {NUM_MOBILE},1,Ringing()
 same => n,Wait(1)
 same => n,Answer()
 same => n,Echo()
; Novofon takes the number as 8XXXXXXXXXX or +7XXXXXXXXXX too, and maps it to 7XXXXXXXXXX.
exten => _8XXXXXXXXXX,1,Goto(7${{EXTEN:1}},1)
exten => _+7XXXXXXXXXX,1,Goto(${{EXTEN:1}},1)
exten => {NUM_BUSY},1,Ringing()
 same => n,Wait(0.5)
 same => n,Hangup(17)
exten => {NUM_NOANSWER},1,Ringing()
 same => n,Wait(3600)
exten => _X.,1,Hangup(1)

[to-pbx]
; Inbound calls towards the PBX: Local/<DID>@to-pbx.
exten => _X.,1,Dial(PJSIP/${{EXTEN}}@{TRUNK_LOGIN})

[caller]
; What a caller does once the PBX answers: talk for ${{TALK}} seconds, then hang up.
exten => talk,1,Wait(${{IF($["${{TALK}}" = ""]?2:${{TALK}})}})
 same => n,Hangup(16)
""",
        )

    def _render_phones(self) -> None:
        blocks = [
            f"[transport-udp]\ntype=transport\nprotocol=udp\nbind={PHONES_IP}:5060\n",
            f"[pbx]\ntype=endpoint\ntransport=transport-udp\ncontext=handsets\ndisallow=all\n"
            f"allow=alaw,ulaw\ndirect_media=no\n\n[pbx]\ntype=identify\nendpoint=pbx\nmatch={PBX_IP}\n",
        ]
        for ext in EXTENSIONS:
            blocks.append(
                f"""[auth{ext}]
type=auth
auth_type=userpass
username={ext}
password=lab-phone-{ext}

[reg{ext}]
type=registration
transport=transport-udp
outbound_auth=auth{ext}
server_uri=sip:{PBX_IP}:5060
client_uri=sip:{ext}@{PBX_IP}:5060
contact_user={ext}
retry_interval=2
expiration=300

[{ext}]
type=aor
contact=sip:{PBX_IP}:5060

[{ext}]
type=endpoint
transport=transport-udp
context=handsets
disallow=all
allow=alaw,ulaw
direct_media=no
outbound_auth=auth{ext}
aors={ext}
from_user={ext}
callerid=Handset {ext} <{ext}>
"""
            )
        self._write(PHONES, "pjsip.conf", "\n".join(blocks))
        self._write(
            PHONES,
            "extensions.conf",
            """[handsets]
exten => 101,1,Ringing()
 same => n,Wait(1)
 same => n,Answer()
 same => n,Echo()
exten => 102,1,Ringing()
 same => n,Wait(2)
 same => n,Answer()
 same => n,Wait(3)
 same => n,Hangup(16)
exten => 103,1,Ringing()
 same => n,Wait(3600)
exten => 104,1,Hangup(17)
exten => 105,1,Ringing()
 same => n,Wait(1)
 same => n,Answer()
 same => n,Set(GLOBAL(HANDSET_105)=${CHANNEL})
 same => n,Wait(3600)

[handset-transfer]
; The handset's transfer key (the test redirects a call here): REFER to ${XFER_TO}, then hang up.
exten => s,1,Transfer(${XFER_TO})
 same => n,Hangup()

[employee]
; What an employee does once the far side answers: talk for ${TALK} seconds, then hang up.
exten => talk,1,Wait(${IF($["${TALK}" = ""]?2:${TALK})})
 same => n,Hangup(16)
""",
        )

    # ---- processes ---------------------------------------------------------------------------
    def _cmd(self, inst: Instance, *args: str) -> list[str]:
        return ["chroot", str(self.root), "/usr/sbin/asterisk", "-C", f"{inst.base}/etc/asterisk.conf", *args]

    def rx(self, inst: Instance, command: str, timeout: float = 15) -> str:
        out = subprocess.run(self._cmd(inst, "-rx", command), capture_output=True, text=True, timeout=timeout)
        return out.stdout

    def start(self, inst: Instance) -> None:
        with open(self.host_path(inst, "log", "console.log"), "ab") as log:  # the child keeps its copy
            proc = subprocess.Popen(
                self._cmd(inst, "-f", "-n", "-q"),
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.procs[inst.name] = proc
        self.host_path(inst, "run", "lab.pid").write_text(str(proc.pid))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise LabError(
                    f"asterisk {inst.name} exited with {proc.returncode}; see "
                    f"{self.host_path(inst, 'log', 'messages')}"
                )
            if (self.host_path(inst, "run", "asterisk.ctl")).exists():
                try:
                    if "fully booted" in self.rx(inst, "core waitfullybooted", timeout=30).lower():
                        return
                except subprocess.TimeoutExpired:
                    pass
            time.sleep(0.2)
        raise LabError(f"asterisk {inst.name} did not boot within 60 s")

    def stop(self, inst: Instance, hard: bool = False) -> None:
        proc = self.procs.pop(inst.name, None)
        if proc is None or proc.poll() is not None:
            return
        if hard:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.rx(inst, "core stop now", timeout=10)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        ctl = self.host_path(inst, "run", "asterisk.ctl")
        ctl.unlink(missing_ok=True)

    def wait_for(self, inst: Instance, command: str, pattern: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        out = ""
        while time.monotonic() < deadline:
            out = self.rx(inst, command)
            if re.search(pattern, out):
                return out
            time.sleep(0.25)
        raise LabError(f"{inst.name}: {command!r} never matched {pattern!r}; last output:\n{out}")

    def wait_registered(self, timeout: float = 30) -> None:
        self.wait_for(PBX, "pjsip show registrations", r"novofon-reg.*Registered", timeout)
        for ext in EXTENSIONS:
            self.wait_for(PBX, f"pjsip show aor {ext}", r"Contact:\s+" + ext + r"/sip:", timeout)

    def up(self) -> None:
        mount(self.root)
        self.stop_all()
        self.render()
        for inst in (PROVIDER, PBX, PHONES):
            self.start(inst)
        self.wait_registered()
        self.running = True
        _log(f"lab up ({self.profile}): pbx {PBX_IP}, provider {PROVIDER_IP}, phones {PHONES_IP}")

    def use_profile(self, profile: str) -> None:
        """Run the lab with ``profile``: re-rendered and restarted when it runs another one (or not yet)."""
        if profile not in PROFILES:
            raise LabError(f"unknown lab profile {profile!r}: one of {', '.join(PROFILES)}")
        if self.running and profile == self.profile:
            return
        self.profile = profile
        self.up()

    def stop_all(self) -> None:
        for inst in INSTANCES:
            self.stop(inst)
        # Instances left over by an earlier run of this lab slot that died without cleaning up:
        # found by the PID it wrote, and only if that process is still our Asterisk (never by pattern).
        for inst in INSTANCES:
            pid_file = self.host_path(inst, "run", "lab.pid")
            with contextlib.suppress(OSError, ValueError):
                pid = int(pid_file.read_text())
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                if f"-C {inst.base}/etc/asterisk.conf".encode() in cmdline:
                    os.killpg(pid, signal.SIGKILL)
            pid_file.unlink(missing_ok=True)
        for inst in INSTANCES:
            if (self.host_path(inst, "run", "asterisk.ctl")).exists():
                subprocess.run(
                    self._cmd(inst, "-rx", "core stop now"), capture_output=True, timeout=15, check=False
                )

    def down(self) -> None:
        self.stop_all()
        self.running = False
        umount(self.root)


def freepbx() -> ModuleType:
    """tests/lab/freepbx.py (imported late: it reads this module's constants)."""
    from tests.lab import freepbx as module

    return module


def main() -> None:
    args = sys.argv[1:]
    profile = "plain"
    if "--profile" in args:
        i = args.index("--profile")
        profile = args[i + 1] if i + 1 < len(args) else ""
        del args[i : i + 2]
    cmd = args[0] if args else "up"
    lab = Lab(profile=profile)
    if cmd == "up":
        lab.up()
    elif cmd == "down":
        lab.down()
    elif cmd == "provision":
        print(lab.root)
    else:
        raise SystemExit("usage: python -m tests.lab.lab up|down|provision [--profile plain|freepbx]")


if __name__ == "__main__":
    main()
