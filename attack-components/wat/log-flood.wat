;; Calls the host's log function with an empty message in a tight loop: a
;; host-call flood. Ends at the CPU limit; the host keeps only what the log
;; cap allows (every line costs at least its overhead).
;; world: chimera:agent/agent
(module
  (import "chimera:agent/logging@0.1.0" "log" (func $log (param i32 i32 i32 i32 i32)))
  (memory (export "memory") 1)
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (i32.const 1024))
  (func (export "run") (param i32 i32) (result i32)
    (loop $flood
      (call $log (i32.const 2) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0))
      (br $flood))
    (unreachable)))
