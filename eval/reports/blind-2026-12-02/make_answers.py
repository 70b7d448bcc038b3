import json, random, subprocess, sys
qs = [l.strip() for l in open("/tmp/t/blind_questions.txt", encoding="utf-8") if l.strip()]
def answers(pythonpath, cwd):
    out = subprocess.run(["/work/main/.venv/bin/python", "-c", f"""
import sys, json
sys.path.insert(0, {pythonpath!r})
from rag.pipeline import Assistant
a = Assistant()
for q in json.load(open('/tmp/t/bq.json')):
    r = a.ask(q)
    heads = [f"[{{c['n']}}] 《{{c['title']}}》{{c['section']}}" for c in r['citations']]
    print(json.dumps(r['answer'] + ('\\n来源：\\n' + '\\n'.join(heads) if heads else ''), ensure_ascii=False))
"""], capture_output=True, text=True, cwd=cwd, env={"PYTHONPATH": pythonpath, "PATH": "/usr/bin:/bin", "HOME": "/root"})
    lines = [json.loads(l) for l in out.stdout.splitlines() if l.startswith('"')]
    assert len(lines) == len(qs), out.stderr[-2000:]
    return lines
json.dump(qs, open("/tmp/t/bq.json", "w"), ensure_ascii=False)
before = answers("/tmp/starttree", "/tmp/starttree")
after = answers("/work/main", "/work/main")
rng = random.Random(20261202)
key, items = {}, []
for i, (q, b, a) in enumerate(zip(qs, before, after), 1):
    flip = rng.random() < 0.5
    x, y = (a, b) if flip else (b, a)
    key[i] = {"X": "after" if flip else "before", "Y": "before" if flip else "after"}
    items.append(f"## {i}. {q}\n\n### 回答 X\n\n```\n{x}\n```\n\n### 回答 Y\n\n```\n{y}\n```\n")
import os
os.makedirs("/tmp/blind", exist_ok=True)
open("/tmp/blind/answers.md", "w", encoding="utf-8").write("\n".join(items))
json.dump(key, open("/tmp/t/blind_key.json", "w"))
print(len(items), "items")
