// A local stand-in for the one module DSPy's Deno runner imports from deno.land (std's
// io/readLines), which this machine cannot reach: the lines of a Deno reader, as an async
// iterator. `just py-bench` points a copy of the runner at this file.
export async function* readLines(reader) {
  const decoder = new TextDecoder();
  const chunk = new Uint8Array(1 << 16);
  let buffered = "";
  for (;;) {
    const n = await reader.read(chunk);
    if (n === null) break;
    buffered += decoder.decode(chunk.subarray(0, n), { stream: true });
    let end;
    while ((end = buffered.indexOf("\n")) >= 0) {
      const line = buffered.slice(0, end);
      buffered = buffered.slice(end + 1);
      yield line.endsWith("\r") ? line.slice(0, -1) : line;
    }
  }
  buffered += decoder.decode();
  if (buffered.length > 0) yield buffered;
}
