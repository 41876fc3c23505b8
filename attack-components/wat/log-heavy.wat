;; Spends its time in the host, not in wasm: `log` calls in a loop, each
;; handing over a 16,000-byte message (under the 4 x max_line_bytes the host
;; decodes) and eight fields pointing at it, so every call makes the host
;; validate, escape and cap a line. The CPU the host spends serving these
;; calls is the agent's.
;; world: chimera:agent/agent
(module
  (import "chimera:agent/logging@0.1.0" "log" (func $log (param i32 i32 i32 i32 i32)))
  (memory (export "memory") 1)
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (i32.const 32768))
  (func (export "run") (param i32 i32) (result i32)
    (local $i i32)
    (memory.fill (i32.const 0) (i32.const 97) (i32.const 16000))
    ;; Eight fields at 16384: (ptr 0, len 16000) for key and value.
    (loop $fields
      (i32.store (i32.add (i32.const 16384) (i32.mul (local.get $i) (i32.const 16))) (i32.const 0))
      (i32.store (i32.add (i32.const 16388) (i32.mul (local.get $i) (i32.const 16))) (i32.const 16000))
      (i32.store (i32.add (i32.const 16392) (i32.mul (local.get $i) (i32.const 16))) (i32.const 0))
      (i32.store (i32.add (i32.const 16396) (i32.mul (local.get $i) (i32.const 16))) (i32.const 16000))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $fields (i32.lt_u (local.get $i) (i32.const 8))))
    (loop $forever
      (call $log (i32.const 2) (i32.const 0) (i32.const 16000) (i32.const 16384) (i32.const 8))
      (br $forever))
    (i32.const 0)))
