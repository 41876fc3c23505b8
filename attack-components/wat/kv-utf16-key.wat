;; Calls kv.get 1,000 times with a key that is its whole 56 MiB memory, in
;; UTF-16: decoded, each would become up to 169 MiB of UTF-8 on the host.
;; The host refuses it from its length alone; the agent returns the last
;; refusal's text. A component already (string-encoding=utf16), so no world.
(component
  (import "chimera:agent/kv@0.1.0" (instance $kv
    (type $error (variant (case "denied" string) (case "too-large" string) (case "invalid-key" string)
                          (case "invalid-value" string) (case "unavailable" string)))
    (export "kv-error" (type $kv-error (eq $error)))
    (type $get (func (param "key" string) (result (result (option (list u8)) (error $kv-error)))))
    (export "get" (func (type $get)))))
  (alias export $kv "get" (func $get))

  ;; The memory and allocator, apart from the code, so the import can be
  ;; lowered into the memory before the code is instantiated.
  (core module $mem
    (memory (export "memory") 900)
    (global $heap (mut i32) (i32.const 1024))
    (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
      (local $p i32)
      (local.set $p (i32.and (i32.add (global.get $heap) (i32.sub (local.get 2) (i32.const 1)))
                             (i32.sub (i32.const 0) (local.get 2))))
      (global.set $heap (i32.add (local.get $p) (local.get 3)))
      (local.get $p)))
  (core instance $mem (instantiate $mem))
  (core func $get (canon lower (func $get) (memory (core memory $mem "memory"))
                               (realloc (core func $mem "cabi_realloc")) string-encoding=utf16))

  (core module $main
    (import "kv" "get" (func $get (param i32 i32 i32)))
    (import "mem" "memory" (memory 900))
    (func (export "run") (param i32 i32) (result i32)
      (local $i i32)
      (loop $again
        ;; 29,491,200 UTF-16 code units: every byte of memory from 0
        (call $get (i32.const 0) (i32.const 29491200) (i32.const 64))
        ;; return area at 64: result tag, then kv-error tag at 68, its text at 72/76
        (if (i32.eqz (i32.load8_u (i32.const 64))) (then (unreachable)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $again (i32.lt_u (local.get $i) (i32.const 1000))))
      (i32.store8 (i32.const 128) (i32.const 0))
      (i32.store (i32.const 132) (i32.load (i32.const 72)))
      (i32.store (i32.const 136) (i32.load (i32.const 76)))
      (i32.const 128)))
  (core instance $main (instantiate $main
    (with "kv" (instance (export "get" (func $get))))
    (with "mem" (instance $mem))))

  (type $agent-error' (record (field "message" string) (field "retryable" bool)))
  (export $agent-error "agent-error" (type $agent-error'))
  (func $run (param "input" string) (result (result string (error $agent-error)))
    (canon lift (core func $main "run") (memory (core memory $mem "memory"))
                (realloc (core func $mem "cabi_realloc")) string-encoding=utf16))
  (export "run" (func $run)))
