;; Imports `chimera:agent/kv@0.1.0-rc`: inside the 0.1 series by its
;; number, but a pre-release the host's 0.1.0 interface does not satisfy.
;; `chimera audit` must refuse it exactly as loading does.
(component
  (import "chimera:agent/kv@0.1.0-rc" (instance $kv
    (export "delete" (func (param "key" string) (result bool)))
  ))
  (core module $main
    (memory (export "memory") 1)
    (func (export "realloc") (param i32 i32 i32 i32) (result i32) (i32.const 1024))
    (func (export "run") (param i32 i32) (result i32)
      (i32.store8 (i32.const 16) (i32.const 0))
      (i32.store (i32.const 20) (i32.const 0))
      (i32.store (i32.const 24) (i32.const 0))
      (i32.const 16)))
  (core instance $instance (instantiate $main))
  (alias core export $instance "memory" (core memory $mem))
  (alias core export $instance "run" (core func $core-run))
  (alias core export $instance "realloc" (core func $core-realloc))
  (type $agent-error (record (field "message" string) (field "retryable" bool)))
  (export $agent-error-e "agent-error" (type $agent-error))
  (func $run (param "input" string) (result (result string (error $agent-error-e)))
    (canon lift (core func $core-run) (memory $mem) (realloc $core-realloc)))
  (export "run" (func $run))
)
