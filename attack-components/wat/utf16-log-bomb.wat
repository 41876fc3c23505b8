;; A component whose strings are UTF-16 (the host must transcode them to
;; UTF-8, up to 3x their size). One `log` call hands over a message and 32
;; fields that all point at the same region, 64 Ki code units per character
;; of input (input of 480 characters: 60 MiB, all of its memory): decoded
;; naively, 65 copies of up to 90 MiB each. The host sizes every string
;; before decoding, reads none that cannot fit the line, and ends the task
;; when the strings of one call add up to more than its memory limit.
(component
  (import "chimera:agent/logging@0.1.0" (instance $logging
    (type $level (enum "trace" "debug" "info" "warn" "error"))
    (export "level" (type $level-e (eq $level)))
    (export "log" (func (param "level" $level-e) (param "message" string) (param "fields" (list (tuple string string)))))
  ))
  (core module $memory-module (memory (export "memory") 961))
  (core instance $memory-instance (instantiate $memory-module))
  (alias core export $memory-instance "memory" (core memory $mem))
  (alias export $logging "log" (func $log))
  (core func $log-lowered (canon lower (func $log) string-encoding=utf16 (memory $mem)))
  (core module $main
    (import "env" "memory" (memory 961))
    (import "host" "log" (func $log (param i32 i32 i32 i32 i32)))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32) (i32.const 62915584))
    (func (export "run") (param i32 i32) (result i32)
      (local $i i32) (local $n i32)
      ;; Every string is 65,536 code units per character of input, at 0.
      (local.set $n (i32.mul (local.get 1) (i32.const 65536)))
      ;; 32 fields at 60 MiB, each a pair of such strings.
      (loop $fill
        (i32.store (i32.add (i32.const 62914560) (i32.mul (local.get $i) (i32.const 16))) (i32.const 0))
        (i32.store (i32.add (i32.const 62914564) (i32.mul (local.get $i) (i32.const 16))) (local.get $n))
        (i32.store (i32.add (i32.const 62914568) (i32.mul (local.get $i) (i32.const 16))) (i32.const 0))
        (i32.store (i32.add (i32.const 62914572) (i32.mul (local.get $i) (i32.const 16))) (local.get $n))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $fill (i32.lt_u (local.get $i) (i32.const 32))))
      (call $log (i32.const 2) (i32.const 0) (local.get $n) (i32.const 62914560) (i32.const 32))
      ;; Ok("") at 62916608.
      (i32.store8 (i32.const 62916608) (i32.const 0))
      (i32.store (i32.const 62916612) (i32.const 0))
      (i32.store (i32.const 62916616) (i32.const 0))
      (i32.const 62916608)))
  (core instance $instance (instantiate $main
    (with "env" (instance (export "memory" (memory $mem))))
    (with "host" (instance (export "log" (func $log-lowered))))))
  (alias core export $instance "run" (core func $core-run))
  (alias core export $instance "realloc" (core func $core-realloc))
  (type $agent-error (record (field "message" string) (field "retryable" bool)))
  (export $agent-error-e "agent-error" (type $agent-error))
  (func $run (param "input" string) (result (result string (error $agent-error-e)))
    (canon lift (core func $core-run) string-encoding=utf16 (memory $mem) (realloc $core-realloc)))
  (export "run" (func $run))
)
