// world: runnable
// A JavaScript agent that will not stop on its own, for the limit tests.
// Input "spin": a busy loop; "hog": allocates until something stops it.

export function run(input) {
  if (input === 'spin') {
    let n = 0;
    for (;;) {
      n += 1;
    }
  }
  if (input === 'hog') {
    const hoard = [];
    for (;;) {
      hoard.push(new Uint8Array(1 << 20).fill(1));
    }
  }
  return `unknown op ${input}`;
}
