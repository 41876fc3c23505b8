;; Returns a result whose discriminant is 7 (only 0 and 1 exist).
;; world: chimera:agent/agent
(module
  (memory (export "memory") 1)
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (i32.const 1024))
  (func (export "run") (param i32 i32) (result i32)
    (i32.store8 (i32.const 0) (i32.const 7))
    (i32.const 0)))
