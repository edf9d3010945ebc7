# Step 2: find the drug allergy with the host-side regex search (linear time, char offsets).
hits = search(r"(?i)allergy recorded: [^.]+")
for h in hits:
    print(h["start"], "->", h["text"])
visit_headers = search(r"## Visit \d+: (\d{4}-\d{2}-\d{2})", max=10_000)
print(len(visit_headers), "visits; the last on", visit_headers[-1]["text"].split(": ")[1])
