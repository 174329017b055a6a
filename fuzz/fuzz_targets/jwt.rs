#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| sso_sidecar::fuzzing::jwt(data));
