# Step 1: what is the context? (This is the kind of code a root model writes.)
print(type(context).__name__, f"{len(context):,} characters")
print(context[:200])
