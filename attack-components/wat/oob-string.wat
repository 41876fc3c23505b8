;; Returns Ok(string) whose pointer and length run past the end of memory.
;; world: chimera:agent/agent
(module
  (memory (export "memory") 1)
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (i32.const 1024))
  (func (export "run") (param i32 i32) (result i32)
    (i32.store8 (i32.const 0) (i32.const 0))          ;; ok
    (i32.store (i32.const 4) (i32.const 60000))       ;; ptr
    (i32.store (i32.const 8) (i32.const 100000))      ;; len: beyond 64 KiB
    (i32.const 0)))
