;; A component whose strings are UTF-16 (the host must transcode them to
;; UTF-8, up to 3x their size) sends two requests under max_request_bytes =
;; 1024 (the test's policy):
;;  1. a header value of 8,388,608 code units (16 MiB of its memory): over
;;     the limit by its length alone, refused before anything is decoded;
;;  2. a header value of 600 `é` (600 units, 1,200 bytes as UTF-8): within
;;     the limit by its length, over it once decoded; refused before it
;;     leaves.
;; It returns both refusals, one per line.
(component
  (import "chimera:agent/outbound-http@0.1.0" (instance $http
    (type $method (enum "get" "head" "post" "put" "patch" "delete" "options"))
    (export "method" (type $method-e (eq $method)))
    (type $request (record
      (field "method" $method-e)
      (field "url" string)
      (field "headers" (list (tuple string string)))
      (field "body" (option (list u8)))))
    (export "request" (type $request-e (eq $request)))
    (type $response (record
      (field "status" u16)
      (field "headers" (list (tuple string string)))
      (field "body" (list u8))))
    (export "response" (type $response-e (eq $response)))
    (type $error (variant
      (case "denied" string)
      (case "timeout")
      (case "too-large" string)
      (case "quota-exceeded" string)
      (case "invalid-request" string)
      (case "connection-failed" string)))
    (export "http-error" (type $error-e (eq $error)))
    (export "send" (func (param "request" $request-e) (result (result $response-e (error $error-e)))))
  ))
  ;; Memory and a bump allocator, instantiated first so `send` can be
  ;; lowered with them.
  (core module $memory-module
    (memory (export "memory") 400)
    (global $bump (mut i32) (i32.const 20000000))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32)
      (local $p i32)
      (local.set $p (i32.and (i32.add (global.get $bump) (i32.const 7)) (i32.const -8)))
      (global.set $bump (i32.add (local.get $p) (local.get 3)))
      (local.get $p)))
  (core instance $memory-instance (instantiate $memory-module))
  (alias core export $memory-instance "memory" (core memory $mem))
  (alias core export $memory-instance "realloc" (core func $realloc))
  (alias export $http "send" (func $send))
  (core func $send-lowered (canon lower (func $send) string-encoding=utf16 (memory $mem) (realloc $realloc)))
  (core module $main
    (import "env" "memory" (memory 400))
    (import "env" "realloc" (func $realloc (param i32 i32 i32 i32) (result i32)))
    (import "host" "send" (func $send (param i32 i32 i32 i32 i32 i32 i32 i32 i32)))
    ;; "http://127.0.0.1:9/x" (20 units) and "x-big" (5 units) in UTF-16.
    (data (i32.const 17000000)
      "h\00t\00t\00p\00:\00/\00/\001\002\007\00.\000\00.\000\00.\001\00:\009\00/\00x\00")
    (data (i32.const 17000100) "x\00-\00b\00i\00g\00")
    (func (export "run") (param i32 i32) (result i32)
      (local $i i32) (local $out i32) (local $l1 i32) (local $l2 i32)
      ;; headers 1 at 17000200: ("x-big", 8388608 units at 0, all NUL)
      (i32.store (i32.const 17000200) (i32.const 17000100))
      (i32.store (i32.const 17000204) (i32.const 5))
      (i32.store (i32.const 17000208) (i32.const 0))
      (i32.store (i32.const 17000212) (i32.const 8388608))
      ;; headers 2 at 17000300: ("x-big", 600 × U+00E9 at 17001000)
      (loop $fill
        (i32.store16 (i32.add (i32.const 17001000) (i32.shl (local.get $i) (i32.const 1))) (i32.const 0xe9))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $fill (i32.lt_u (local.get $i) (i32.const 600))))
      (i32.store (i32.const 17000300) (i32.const 17000100))
      (i32.store (i32.const 17000304) (i32.const 5))
      (i32.store (i32.const 17000308) (i32.const 17001000))
      (i32.store (i32.const 17000312) (i32.const 600))
      ;; GET, url, one header, no body; results at 17000400 and 17000432.
      (call $send (i32.const 0) (i32.const 17000000) (i32.const 20) (i32.const 17000200) (i32.const 1)
        (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 17000400))
      (call $send (i32.const 0) (i32.const 17000000) (i32.const 20) (i32.const 17000300) (i32.const 1)
        (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 17000432))
      ;; Both must be err (tag 1) too-large (http-error tag 2).
      (if (i32.or (i32.eqz (i32.load8_u (i32.const 17000400))) (i32.eqz (i32.load8_u (i32.const 17000432))))
        (then (unreachable)))
      (if (i32.or (i32.ne (i32.load8_u (i32.const 17000404)) (i32.const 2))
                  (i32.ne (i32.load8_u (i32.const 17000436)) (i32.const 2)))
        (then (unreachable)))
      ;; Output: reason 1, "\n", reason 2 (lengths in UTF-16 units).
      (local.set $l1 (i32.load (i32.const 17000412)))
      (local.set $l2 (i32.load (i32.const 17000444)))
      (local.set $out (call $realloc (i32.const 0) (i32.const 0) (i32.const 2)
        (i32.shl (i32.add (i32.add (local.get $l1) (local.get $l2)) (i32.const 1)) (i32.const 1))))
      (memory.copy (local.get $out) (i32.load (i32.const 17000408)) (i32.shl (local.get $l1) (i32.const 1)))
      (i32.store16 (i32.add (local.get $out) (i32.shl (local.get $l1) (i32.const 1))) (i32.const 10))
      (memory.copy
        (i32.add (local.get $out) (i32.shl (i32.add (local.get $l1) (i32.const 1)) (i32.const 1)))
        (i32.load (i32.const 17000440))
        (i32.shl (local.get $l2) (i32.const 1)))
      ;; Ok(out) at 17000500.
      (i32.store8 (i32.const 17000500) (i32.const 0))
      (i32.store (i32.const 17000504) (local.get $out))
      (i32.store (i32.const 17000508) (i32.add (i32.add (local.get $l1) (local.get $l2)) (i32.const 1)))
      (i32.const 17000500)))
  (core instance $instance (instantiate $main
    (with "env" (instance (export "memory" (memory $mem)) (export "realloc" (func $realloc))))
    (with "host" (instance (export "send" (func $send-lowered))))))
  (alias core export $instance "run" (core func $core-run))
  (type $agent-error (record (field "message" string) (field "retryable" bool)))
  (export $agent-error-e "agent-error" (type $agent-error))
  (func $run (param "input" string) (result (result string (error $agent-error-e)))
    (canon lift (core func $core-run) string-encoding=utf16 (memory $mem) (realloc $realloc)))
  (export "run" (func $run))
)
