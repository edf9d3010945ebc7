# Step 3: look around the hit, compute the answer in Python, and finish with FINAL_VAR.
start = hits[0]["start"]
visit = context.rfind("## Visit", 0, start)
header = context[visit:context.find("\n", visit)]
drug = hits[0]["text"].split(": ", 1)[1].split(" caused")[0]
answer_text = f"{drug} (first recorded at {header.removeprefix('## ')})"
FINAL_VAR("answer_text")
