;; Recurses without bound: must end in a stack-overflow trap, never a
;; process abort.
;; world: chimera:agent/agent
(module
  (memory (export "memory") 1)
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (i32.const 1024))
  (func $down (param i32) (result i32)
    (i32.add (call $down (i32.add (local.get 0) (i32.const 1))) (i32.const 1)))
  (func (export "run") (param i32 i32) (result i32)
    (drop (call $down (i32.const 0)))
    (i32.const 0)))
