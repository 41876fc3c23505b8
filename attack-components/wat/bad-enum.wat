;; Calls log with level 9 (the enum has five cases).
;; world: chimera:agent/agent
(module
  (import "chimera:agent/logging@0.1.0" "log" (func $log (param i32 i32 i32 i32 i32)))
  (memory (export "memory") 1)
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (i32.const 1024))
  (func (export "run") (param i32 i32) (result i32)
    (call $log (i32.const 9) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0))
    (unreachable)))
