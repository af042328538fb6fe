#!/usr/bin/env python3
"""Goodput under churn: `train_dp --elastic` on 4 local ranks for about SECONDS, one rank
SIGKILLed every EVERY seconds (ranks 0, 1, 2, 3 in turn) and replaced (`--replace`), against
the same number of steps without failures. Both runs use the elastic path (the same per-step
check), back to back; goodput = steps per second with churn / without.

    cargo build --release --example train_dp
    python3 benches/elastic_goodput.py [--seconds 300] [--every 30] [--out FILE.json]
"""
import argparse, datetime, json, os, re, statistics, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "target", "release", "examples", "train_dp")


def run(steps, fails, replace):
    cmd = [TRAIN, "--np", "4", "--elastic", "--steps", str(steps), "--eval-every", str(10**9)]
    for f in fails:
        cmd += ["--fail", f]
    if replace:
        cmd.append("--replace")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FERROCOLL_RANK", "FERROCOLL_WORLD", "FERROCOLL_STORE", "RANK", "WORLD_SIZE"))}
    t0 = time.monotonic()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    secs = time.monotonic() - t0
    if p.returncode != 0 or "final loss" not in p.stdout:
        sys.exit(f"train_dp failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    rec = [float(m.group(1)) for m in re.finditer(r"recovered: world \d+ -> \d+ in ([0-9.]+) s", p.stdout)]
    grew = [float(m.group(1)) for m in re.finditer(r"grew: world \d+ -> \d+ in ([0-9.]+) s", p.stdout)]
    return {"steps": steps, "seconds": secs, "steps_per_s": steps / secs,
            "failures": p.stdout.count("fail: "), "joined": p.stdout.count("joined: "),
            "recovered_s": rec, "grew_s": grew,
            "final_loss": float(re.search(r"final loss: ([0-9.]+)", p.stdout).group(1))}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=300)
    ap.add_argument("--every", type=float, default=30)
    ap.add_argument("--out", default=os.path.join(
        ROOT, "benches", "results", f"{datetime.date.today()}-elastic-goodput.json"))
    a = ap.parse_args()
    if not os.access(TRAIN, os.X_OK):
        sys.exit(f"missing {TRAIN}: cargo build --release --example train_dp")
    cal = run(20000, [], False)
    steps = int(cal["steps_per_s"] * a.seconds)
    print(f"calibration: {cal['steps_per_s']:.0f} steps/s; {steps} steps per run", flush=True)
    base = run(steps, [], False)
    print(f"without failures: {base['steps_per_s']:.0f} steps/s in {base['seconds']:.1f} s", flush=True)
    kills = [f"kill:{i % 4}@{a.every * (i + 1):g}s" for i in range(int(a.seconds // a.every))]
    churn = run(steps, kills, True)
    print(f"with churn: {churn['steps_per_s']:.0f} steps/s in {churn['seconds']:.1f} s, "
          f"{churn['failures']} failures, {churn['joined']} replacements", flush=True)
    ratio = churn["steps_per_s"] / base["steps_per_s"]
    med = lambda xs: statistics.median(xs) if xs else None
    out = {"bench": "goodput under churn, train_dp --elastic, 4 local ranks",
           "seconds": a.seconds, "kill_every_s": a.every, "fails": kills,
           "baseline": base, "churn": churn, "goodput": ratio,
           "median_recovered_s": med(churn["recovered_s"]), "median_grew_s": med(churn["grew_s"])}
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    json.dump(out, open(a.out, "w"), indent=1)
    print(f"goodput {100 * ratio:.1f}% (recovery median {out['median_recovered_s']} s, "
          f"grow median {out['median_grew_s']} s) -> {a.out}")


if __name__ == "__main__":
    main()
