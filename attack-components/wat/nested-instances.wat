;; The 41 core instances of many-instances.wat, hidden in a nested
;; component: it instantiates a core module 8 times, and the outer component
;; instantiates it 5 times (40), plus the main instance. The host counts
;; instances through nested components before it runs anything, so the
;; policy's [limits] instances (32 by default) refuses it at load.
(component
  (core module $m
    (memory (export "memory") 1)
    (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (i32.const 1024))
    (func (export "run") (param i32 i32) (result i32) (unreachable)))
  (component $inner
    (core module $tiny (func (export "f")))
    (core instance $t0 (instantiate $tiny))
    (core instance $t1 (instantiate $tiny))
    (core instance $t2 (instantiate $tiny))
    (core instance $t3 (instantiate $tiny))
    (core instance $t4 (instantiate $tiny))
    (core instance $t5 (instantiate $tiny))
    (core instance $t6 (instantiate $tiny))
    (core instance $t7 (instantiate $tiny)))
  (instance $n0 (instantiate $inner))
  (instance $n1 (instantiate $inner))
  (instance $n2 (instantiate $inner))
  (instance $n3 (instantiate $inner))
  (instance $n4 (instantiate $inner))
  (core instance $main (instantiate $m))
  (type $error' (record (field "message" string) (field "retryable" bool)))
  (export $error "agent-error" (type $error'))
  (func $run (param "input" string) (result (result string (error $error)))
    (canon lift (core func $main "run") (memory (core memory $main "memory")) (realloc (core func $main "cabi_realloc"))))
  (export "run" (func $run)))
