;; Writes a secret at offset 1000 and at 3 MiB (beyond the part of a pool
;; slot kept resident), then ends normally, hoping the next tenant of the
;; slot can read it.
;; world: chimera:agent/agent
(module
  (memory (export "memory") 64)
  (data (i32.const 200) "SECRET-0123456789")
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (i32.const 2048))
  (func (export "run") (param i32 i32) (result i32)
    (memory.copy (i32.const 1000) (i32.const 200) (i32.const 16))
    (memory.copy (i32.const 3145728) (i32.const 200) (i32.const 16))
    ;; Ok("") from the return area at 0.
    (i32.store8 (i32.const 0) (i32.const 0))
    (i32.store (i32.const 4) (i32.const 0))
    (i32.store (i32.const 8) (i32.const 0))
    (i32.const 0)))
