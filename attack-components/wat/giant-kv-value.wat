;; Hands the host a 56 MiB value to store. The host checks the length
;; before copying anything and refuses; the agent returns the refusal text.
;; world: chimera:agent/agent
(module
  (import "chimera:agent/kv@0.1.0" "set" (func $set (param i32 i32 i32 i32 i32)))
  (memory (export "memory") 900)
  (data (i32.const 16) "k")
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (i32.const 1024))
  (func (export "run") (param i32 i32) (result i32)
    (call $set (i32.const 16) (i32.const 1) (i32.const 0) (i32.const 58982400) (i32.const 64))
    ;; return area at 64: result tag, then kv-error tag at 68, its string at 72/76
    (if (i32.eqz (i32.load8_u (i32.const 64))) (then (unreachable)))
    (i32.store8 (i32.const 128) (i32.const 0))
    (i32.store (i32.const 132) (i32.load (i32.const 72)))
    (i32.store (i32.const 136) (i32.load (i32.const 76)))
    (i32.const 128)))
