//! Compatibility dates and flags, as a worker's deployment names them.
//!
//! The flags are workerd's (`FLAGS`, from workerd's
//! `compatibility-date.capnp`: each feature's enable flag, its disable flag and
//! the date from which it is on by default). [`resolve`] checks a deployment
//! the way workerd checks its config: the date is a real `YYYY-MM-DD` no later
//! than today; every flag is one workerd knows; a feature is not both enabled
//! and disabled; experimental features are refused (Cloudflare does not run
//! them). The result says which features are on (by flag, or by date) and
//! which of the flags given edged does not act on — those are accepted, so a
//! Wrangler project deploys, and reported as warnings rather than dropped
//! silently.

use std::collections::BTreeSet;

/// One feature: its enable flag, its disable flag, the date it becomes the
/// default, whether it is experimental.
pub struct Feature {
    pub enable: Option<&'static str>,
    pub disable: Option<&'static str>,
    pub date: Option<&'static str>,
    pub experimental: bool,
}

const fn f(
    enable: Option<&'static str>,
    disable: Option<&'static str>,
    date: Option<&'static str>,
    experimental: bool,
) -> Feature {
    Feature {
        enable,
        disable,
        date,
        experimental,
    }
}

/// Features edged has, by enable flag: edged behaves this way whatever the
/// date or flags say.
const ALWAYS_ON: &[&str] = &["web_socket_auto_reply_to_close"];

/// Flags whose behaviour edged reads (`node.rs`), on and off.
const ACTED_ON: &[&str] = &[
    "nodejs_compat",
    "no_nodejs_compat",
    "nodejs_als",
    "no_nodejs_als",
    "nodejs_compat_v2",
    "no_nodejs_compat_v2",
    "nodejs_compat_populate_process_env",
    "nodejs_compat_do_not_populate_process_env",
];

/// Why a deployment's compatibility settings are refused.
#[derive(Debug, PartialEq, Eq)]
pub struct CompatError {
    pub code: &'static str,
    pub message: String,
}

fn refuse(code: &'static str, message: String) -> CompatError {
    CompatError { code, message }
}

/// A deployment's compatibility settings, checked.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Resolved {
    /// Features on (by their enable flag, or their disable flag's name when
    /// they have no enable flag).
    pub enabled: BTreeSet<&'static str>,
    /// What edged does not act on, for the deploy response.
    pub warnings: Vec<String>,
}

impl Resolved {
    pub fn has(&self, enable_flag: &str) -> bool {
        self.enabled.contains(enable_flag)
    }
}

fn today() -> String {
    chrono::Utc::now().format("%Y-%m-%d").to_string()
}

/// Checks `date` and `flags` (see the module doc).
pub fn resolve(date: Option<&str>, flags: &[String]) -> Result<Resolved, CompatError> {
    if let Some(d) = date {
        if d.len() != 10 || chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").is_err() {
            return Err(refuse(
                "invalid_compatibility_date",
                format!(
                    "Invalid compatibility date: \"{}\" (expected YYYY-MM-DD)",
                    d.escape_debug()
                ),
            ));
        }
        let newest = today();
        if d > newest.as_str() {
            return Err(refuse(
                "invalid_compatibility_date",
                format!(
                    "Can't set compatibility date in the future: \"{d}\" is after today ({newest})"
                ),
            ));
        }
    }
    let mut on_by_flag = BTreeSet::new();
    let mut off_by_flag = BTreeSet::new();
    let mut ignored = Vec::new();
    for flag in flags {
        let found = FLAGS.iter().enumerate().find_map(|(i, feat)| {
            if feat.enable == Some(flag.as_str()) {
                Some((i, true))
            } else if feat.disable == Some(flag.as_str()) {
                Some((i, false))
            } else {
                None
            }
        });
        let Some((i, enable)) = found else {
            return Err(refuse(
                "unknown_compatibility_flag",
                format!("No such compatibility flag: {}", flag.escape_debug()),
            ));
        };
        let feat = &FLAGS[i];
        if feat.experimental {
            return Err(refuse(
                "experimental_compatibility_flag",
                format!("The compatibility flag {flag} is experimental and cannot be used here"),
            ));
        }
        let (mine, other) = if enable {
            (&mut on_by_flag, &off_by_flag)
        } else {
            (&mut off_by_flag, &on_by_flag)
        };
        if other.contains(&i) {
            let (a, b) = (feat.enable.unwrap_or("-"), feat.disable.unwrap_or("-"));
            return Err(refuse(
                "conflicting_compatibility_flags",
                format!(
                    "Compatibility flags {a} and {b} conflict: a feature cannot be both on and off"
                ),
            ));
        }
        mine.insert(i);
        let acted_on = (feat.enable.is_some_and(|e| ALWAYS_ON.contains(&e)) && enable)
            || ACTED_ON.contains(&flag.as_str());
        if !acted_on && !ignored.contains(flag) {
            ignored.push(flag.clone());
        }
    }
    let mut out = Resolved::default();
    for (i, feat) in FLAGS.iter().enumerate() {
        let by_date = match (date, feat.date) {
            (Some(d), Some(since)) => d >= since,
            _ => false,
        };
        if (by_date || on_by_flag.contains(&i)) && !off_by_flag.contains(&i) {
            if let Some(name) = feat.enable.or(feat.disable) {
                out.enabled.insert(name);
            }
        }
    }
    if !ignored.is_empty() {
        out.warnings.push(format!(
            "edged accepts but does not yet act on these compatibility flags: {}",
            ignored.join(", ")
        ));
    }
    Ok(out)
}

/// workerd's features, in the order of its `compatibility-date.capnp`
/// (cloudflare/workerd, 2026-08; every flag here was checked against the
/// workerd 2026-11-17 binary from npm, which knows them all).
#[rustfmt::skip]
pub static FLAGS: &[Feature] = &[
    f(Some("formdata_parser_supports_files"), Some("formdata_parser_converts_files_to_strings"), Some("2021-11-03"), false), // formDataParserSupportsFiles
    f(Some("fetch_refuses_unknown_protocols"), Some("fetch_treats_unknown_protocols_as_http"), Some("2021-11-10"), false), // fetchRefusesUnknownProtocols
    f(Some("html_rewriter_treats_esi_include_as_void_tag"), None, None, false), // esiIncludeIsVoidTag
    f(Some("durable_object_fetch_requires_full_url"), Some("durable_object_fetch_allows_relative_url"), Some("2021-11-10"), false), // durableObjectFetchRequiresSchemeAuthority
    f(Some("streams_byob_reader_detaches_buffer"), Some("streams_byob_reader_does_not_detach_buffer"), Some("2021-11-10"), false), // streamsByobReaderDetachesBuffer
    f(Some("streams_enable_constructors"), Some("streams_disable_constructors"), Some("2022-11-30"), false), // streamsJavaScriptControllers
    f(Some("workers_api_getters_setters_on_prototype"), Some("workers_api_getters_setters_on_instance"), Some("2022-01-31"), false), // jsgPropertyOnPrototypeTemplate
    f(Some("minimal_subrequests"), Some("no_minimal_subrequests"), Some("2022-04-05"), false), // minimalSubrequests
    f(Some("no_cots_on_external_fetch"), Some("cots_on_external_fetch"), Some("2022-03-08"), false), // noCotsOnExternalFetch
    f(Some("url_standard"), Some("url_original"), Some("2022-10-31"), false), // specCompliantUrl
    f(Some("global_navigator"), Some("no_global_navigator"), Some("2022-03-21"), false), // globalNavigator
    f(Some("capture_async_api_throws"), Some("do_not_capture_async_api_throws"), Some("2022-10-31"), false), // captureThrowsAsRejections
    f(Some("r2_public_beta_bindings"), Some("r2_internal_beta_bindings"), None, false), // r2PublicBetaApi
    f(Some("durable_object_alarms"), None, None, false), // obsolete14
    f(Some("dont_substitute_null_on_type_error"), Some("substitute_null_on_type_error"), Some("2022-06-01"), false), // noSubstituteNull
    f(Some("transformstream_enable_standard_constructor"), Some("transformstream_disable_standard_constructor"), Some("2022-11-30"), false), // transformStreamJavaScriptControllers
    f(Some("r2_list_honor_include"), None, Some("2022-08-04"), false), // r2ListHonorIncludeFields
    f(Some("export_commonjs_default"), Some("export_commonjs_namespace"), Some("2022-10-31"), false), // exportCommonJsDefaultNamespace
    f(Some("durable_object_rename"), None, None, true), // obsolete19
    f(Some("web_socket_compression"), Some("no_web_socket_compression"), Some("2023-08-15"), false), // webSocketCompression
    f(Some("nodejs_compat"), Some("no_nodejs_compat"), Some("2026-08-04"), false), // nodeJsCompat
    f(Some("tcp_sockets_support"), None, None, false), // obsolete22
    f(Some("response_redirect_url_standard"), Some("response_redirect_url_original"), Some("2023-03-14"), false), // specCompliantResponseRedirect
    f(Some("experimental"), None, None, true), // workerdExperimental
    f(Some("durable_object_get_existing"), None, None, true), // durableObjectGetExisting
    f(Some("http_headers_getsetcookie"), Some("no_http_headers_getsetcookie"), Some("2023-03-01"), false), // httpHeadersGetSetCookie
    f(Some("dynamic_dispatch_tunnel_exceptions"), Some("dynamic_dispatch_treat_exceptions_as_500"), Some("2023-03-01"), false), // dispatchExceptionTunneling
    f(Some("service_binding_extra_handlers"), None, None, true), // serviceBindingExtraHandlers
    f(Some("no_cf_botmanagement_default"), Some("cf_botmanagement_default"), Some("2023-08-01"), false), // noCfBotManagementDefault
    f(Some("urlsearchparams_delete_has_value_arg"), Some("no_urlsearchparams_delete_has_value_arg"), Some("2023-07-01"), false), // urlSearchParamsDeleteHasValueArg
    f(Some("strict_compression_checks"), Some("no_strict_compression_checks"), Some("2023-08-01"), false), // strictCompression
    f(Some("brotli_content_encoding"), Some("no_brotli_content_encoding"), Some("2024-04-29"), false), // brotliContentEncoding
    f(Some("strict_crypto_checks"), Some("no_strict_crypto_checks"), Some("2023-08-01"), false), // strictCrypto
    f(Some("rtti_api"), None, None, true), // rttiApi
    f(Some("webgpu"), None, None, true), // obsolete35
    f(Some("crypto_preserve_public_exponent"), Some("no_crypto_preserve_public_exponent"), Some("2023-12-01"), false), // cryptoPreservePublicExponent
    f(Some("vectorize_query_metadata_optional"), Some("vectorize_query_original"), Some("2023-11-08"), false), // vectorizeQueryMetadataOptional
    f(Some("unsafe_module"), None, None, true), // unsafeModule
    f(Some("js_rpc"), None, None, true), // jsRpc
    f(Some("no_global_importscripts"), Some("global_importscripts"), Some("2024-03-04"), false), // noImportScripts
    f(Some("nodejs_als"), Some("no_nodejs_als"), None, false), // nodeJsAls
    f(Some("queues_json_messages"), Some("no_queues_json_messages"), Some("2024-03-18"), false), // queuesJsonMessages
    f(Some("python_workers"), None, None, false), // pythonWorkers
    f(Some("fetcher_no_get_put_delete"), Some("fetcher_has_get_put_delete"), Some("2024-03-26"), false), // fetcherNoGetPutDelete
    f(Some("unwrap_custom_thenables"), Some("no_unwrap_custom_thenables"), Some("2024-04-01"), false), // unwrapCustomThenables
    f(Some("rpc"), Some("no_rpc"), Some("2024-04-03"), false), // fetcherRpc
    f(Some("internal_stream_byob_return_view"), Some("internal_stream_byob_return_undefined"), Some("2024-05-13"), false), // internalStreamByobReturn
    f(Some("blob_standard_mime_type"), Some("blob_legacy_mime_type"), Some("2024-06-03"), false), // blobStandardMimeType
    f(Some("fetch_standard_url"), Some("fetch_legacy_url"), Some("2024-06-03"), false), // fetchStandardUrl
    f(Some("nodejs_compat_v2"), Some("no_nodejs_compat_v2"), Some("2026-08-04"), false), // nodeJsCompatV2
    f(Some("global_fetch_strictly_public"), Some("global_fetch_private_origin"), None, false), // globalFetchStrictlyPublic
    f(Some("new_module_registry"), Some("legacy_module_registry"), None, false), // newModuleRegistry
    f(Some("cache_option_enabled"), Some("cache_option_disabled"), Some("2024-11-11"), false), // cacheOptionEnabled
    f(Some("kv_direct_binding"), None, None, true), // kvDirectBinding
    f(Some("allow_custom_ports"), Some("ignore_custom_ports"), Some("2024-09-02"), false), // allowCustomPorts
    f(Some("increase_websocket_message_size"), None, None, true), // increaseWebsocketMessageSize
    f(Some("internal_writable_stream_abort_clears_queue"), Some("internal_writable_stream_abort_does_not_clear_queue"), Some("2024-09-02"), false), // internalWritableStreamAbortClearsQueue
    f(Some("python_workers_development"), None, None, true), // pythonWorkersDevPyodide
    f(Some("nodejs_zlib"), Some("no_nodejs_zlib"), None, false), // nodeJsZlib
    f(Some("replica_routing"), None, None, true), // replicaRouting
    f(Some("enable_d1_with_sessions_api"), None, None, true), // obsolete61
    f(Some("handle_cross_request_promise_resolution"), Some("no_handle_cross_request_promise_resolution"), Some("2024-10-14"), false), // handleCrossRequestPromiseResolution
    f(Some("set_tostring_tag"), Some("do_not_set_tostring_tag"), Some("2024-09-26"), false), // setToStringTag
    f(Some("upper_case_all_http_methods"), Some("no_upper_case_all_http_methods"), Some("2024-10-14"), false), // upperCaseAllHttpMethods
    f(Some("python_external_packages"), None, None, false), // obsolete66
    f(Some("disable_top_level_await_in_require"), Some("enable_top_level_await_in_require"), Some("2024-12-02"), false), // noTopLevelAwaitInRequire
    f(Some("fixup-transform-stream-backpressure"), Some("original-transform-stream-backpressure"), Some("2024-12-16"), false), // fixupTransformStreamBackpressure
    f(Some("tail_worker_user_spans"), None, None, true), // obsolete69
    f(Some("cache_no_cache_enabled"), Some("cache_no_cache_disabled"), None, false), // cacheNoCache
    f(Some("python_workers_20250116"), Some("no_python_workers_20250116"), None, false), // pythonWorkers20250116
    f(Some("request_cf_overrides_cache_rules"), Some("no_request_cf_overrides_cache_rules"), Some("2025-04-02"), false), // requestCfOverridesCacheRules
    f(Some("memory_cache_delete"), None, None, true), // memoryCacheDelete
    f(Some("unique_ctx_per_invocation"), None, Some("2025-03-10"), false), // obsolete74
    f(Some("nonclass_entrypoint_reuses_ctx_across_invocations"), None, None, false), // reuseCtxAcrossNonclassEvents
    f(Some("queue_consumer_no_wait_for_wait_until"), Some("queue_consumer_wait_for_wait_until"), None, false), // queueConsumerNoWaitForWaitUntil
    f(Some("nodejs_compat_populate_process_env"), Some("nodejs_compat_do_not_populate_process_env"), None, false), // populateProcessEnv
    f(Some("cache_api_request_cf_overrides_cache_rules"), Some("no_cache_api_request_cf_overrides_cache_rules"), Some("2025-05-19"), false), // cacheApiRequestCfOverridesCacheRules
    f(Some("disallow_importable_env"), Some("allow_importable_env"), None, false), // disableImportableEnv
    f(Some("assets_navigation_prefers_asset_serving"), Some("assets_navigation_has_no_effect"), Some("2025-04-01"), false), // assetsSecFetchModeNavigateHeaderPrefersAssetServing
    f(Some("cache_api_compat_flags"), Some("no_cache_api_compat_flags"), Some("2025-04-19"), false), // cacheApiCompatFlags
    f(Some("python_workers_durable_objects"), None, None, true), // obsolete81
    f(Some("streaming_tail_worker"), None, None, true), // obsolete82
    f(Some("urlpattern_standard"), Some("urlpattern_original"), Some("2025-05-01"), false), // specCompliantUrlpattern
    f(Some("enable_weak_ref"), Some("disable_weak_ref"), Some("2025-05-05"), false), // jsWeakRef
    f(Some("request_signal_passthrough"), Some("no_request_signal_passthrough"), None, false), // requestSignalPassthrough
    f(Some("enable_navigator_language"), Some("disable_navigator_language"), Some("2025-05-19"), false), // enableNavigatorLanguage
    f(Some("enable_web_file_system"), None, None, true), // webFileSystem
    f(Some("enable_abortsignal_rpc"), None, None, true), // abortSignalRpc
    f(Some("allow_eval_during_startup"), Some("disallow_eval_during_startup"), Some("2025-06-01"), false), // allowEvalDuringStartup
    f(Some("enable_request_signal"), Some("disable_request_signal"), None, false), // enableRequestSignal
    f(Some("connect_pass_through"), None, None, true), // connectPassThrough
    f(Some("bind_asynclocalstorage_snapshot_to_request"), Some("do_not_bind_asynclocalstorage_snapshot_to-request"), Some("2025-06-16"), false), // bindAsyncLocalStorageSnapshot
    f(Some("throw_on_unrecognized_import_assertion"), Some("ignore_unrecognized_import_assertion"), Some("2025-06-16"), false), // throwOnUnrecognizedImportAssertion
    f(Some("python_workflows"), Some("disable_python_workflows"), None, false), // pythonWorkflows
    f(Some("unsupported_process_actual_platform"), None, None, true), // unsupportedProcessActualPlatform
    f(Some("enable_nodejs_process_v2"), Some("disable_nodejs_process_v2"), None, false), // enableNodeJsProcessV2
    f(Some("set_event_target_this"), Some("no_set_event_target_this"), Some("2025-08-01"), false), // setEventTargetThis
    f(Some("set_forwardable_email_full_headers"), Some("set_forwardable_email_single_headers"), Some("2025-08-01"), false), // enableForwardableEmailFullHeaders
    f(Some("enable_nodejs_http_modules"), Some("disable_nodejs_http_modules"), None, false), // enableNodejsHttpModules
    f(Some("pedantic_wpt"), Some("non_pedantic_wpt"), None, false), // pedanticWpt
    f(Some("expose_global_message_channel"), Some("no_expose_global_message_channel"), Some("2025-08-15"), false), // exposeGlobalMessageChannel
    f(Some("enable_nodejs_http_server_modules"), Some("disable_nodejs_http_server_modules"), None, false), // enableNodejsHttpServerModules
    f(Some("python_no_global_handlers"), Some("disable_python_no_global_handlers"), Some("2025-08-14"), false), // pythonNoGlobalHandlers
    f(Some("enable_nodejs_fs_module"), Some("disable_nodejs_fs_module"), None, false), // enableNodeJsFsModule
    f(Some("enable_nodejs_os_module"), Some("disable_nodejs_os_module"), None, false), // enableNodeJsOsModule
    f(Some("python_workers_force_new_vendor_path"), None, Some("2025-08-11"), false), // pythonWorkersForceNewVendorPath
    f(Some("remove_nodejs_compat_eol"), Some("add_nodejs_compat_eol"), None, false), // removeNodejsCompatEOL
    f(Some("enable_validate_workflow_entrypoint"), Some("disable_validate_workflow_entrypoint"), Some("2025-09-20"), false), // enableWorkflowScriptValidation
    f(Some("python_dedicated_snapshot"), Some("disable_python_dedicated_snapshot"), None, false), // pythonDedicatedSnapshot
    f(Some("typescript_strip_types"), None, None, true), // typescriptStripTypes
    f(Some("enable_nodejs_http2_module"), Some("disable_nodejs_http2_module"), None, false), // enableNodeJsHttp2Module
    f(Some("allow_insecure_inefficient_logged_eval"), None, None, true), // experimentalAllowEvalAlways
    f(Some("strip_authorization_on_cross_origin_redirect"), Some("retain_authorization_on_cross_origin_redirect"), Some("2025-09-01"), false), // stripAuthorizationOnCrossOriginRedirect
    f(Some("enhanced_error_serialization"), Some("legacy_error_serialization"), Some("2026-04-21"), false), // enhancedErrorSerialization
    f(Some("enable_email_sending_queuing"), Some("disable_email_sending_queuing"), None, false), // emailSendingQueuing
    f(Some("remove_nodejs_compat_eol_v22"), Some("add_nodejs_compat_eol_v22"), None, false), // removeNodejsCompatEOLv22
    f(Some("remove_nodejs_compat_eol_v23"), Some("add_nodejs_compat_eol_v23"), None, false), // removeNodejsCompatEOLv23
    f(Some("remove_nodejs_compat_eol_v24"), Some("add_nodejs_compat_eol_v24"), None, false), // removeNodejsCompatEOLv24
    f(Some("enable_nodejs_console_module"), Some("disable_nodejs_console_module"), None, false), // enableNodeJsConsoleModule
    f(Some("enable_nodejs_vm_module"), Some("disable_nodejs_vm_module"), None, false), // enableNodeJsVmModule
    f(Some("enable_nodejs_perf_hooks_module"), Some("disable_nodejs_perf_hooks_module"), None, false), // enableNodeJsPerfHooksModule
    f(Some("enable_global_performance_classes"), Some("disable_global_performance_classes"), None, false), // enableGlobalPerformanceClasses
    f(Some("enable_nodejs_domain_module"), Some("disable_nodejs_domain_module"), None, false), // enableNodeJsDomainModule
    f(Some("enable_nodejs_v8_module"), Some("disable_nodejs_v8_module"), None, false), // enableNodeJsV8Module
    f(Some("enable_nodejs_tty_module"), Some("disable_nodejs_tty_module"), None, false), // enableNodeJsTtyModule
    f(Some("enable_nodejs_punycode_module"), Some("disable_nodejs_punycode_module"), None, false), // enableNodeJsPunycodeModule
    f(Some("enable_nodejs_cluster_module"), Some("disable_nodejs_cluster_module"), None, false), // enableNodeJsClusterModule
    f(Some("enable_nodejs_child_process_module"), Some("disable_nodejs_child_process_module"), None, false), // enableNodeJsChildProcessModule
    f(Some("enable_nodejs_worker_threads_module"), Some("disable_nodejs_worker_threads_module"), None, false), // enableNodeJsWorkerThreadsModule
    f(Some("enable_nodejs_stream_wrap_module"), Some("disable_nodejs_stream_wrap_module"), None, false), // enableNodeJsStreamWrapModule
    f(Some("enable_nodejs_wasi_module"), Some("disable_nodejs_wasi_module"), None, false), // enableNodeJsWasiModule
    f(Some("enable_nodejs_dgram_module"), Some("disable_nodejs_dgram_module"), None, false), // enableNodeJsDgramModule
    f(Some("enable_nodejs_inspector_module"), Some("disable_nodejs_inspector_module"), None, false), // enableNodeJsInspectorModule
    f(Some("enable_nodejs_trace_events_module"), Some("disable_nodejs_trace_events_module"), None, false), // enableNodeJsTraceEventsModule
    f(Some("enable_nodejs_readline_module"), Some("disable_nodejs_readline_module"), None, false), // enableNodeJsReadlineModule
    f(Some("enable_nodejs_repl_module"), Some("disable_nodejs_repl_module"), None, false), // enableNodeJsReplModule
    f(Some("enable_nodejs_sqlite_module"), Some("disable_nodejs_sqlite_module"), None, false), // enableNodeJsSqliteModule
    f(Some("enable_ctx_exports"), Some("disable_ctx_exports"), Some("2025-11-17"), false), // enableCtxExports
    f(Some("enable_python_external_sdk"), Some("disable_python_external_sdk"), Some("2026-04-21"), false), // pythonExternalSDK
    f(Some("enable_fast_jsg_struct"), Some("disable_fast_jsg_struct"), Some("2025-12-03"), false), // fastJsgStruct
    f(Some("cache_reload_enabled"), Some("cache_reload_disabled"), None, true), // cacheReload
    f(Some("enable_streams_nodejs_v24_compat"), Some("disable_streams_nodejs_v24_compat"), None, false), // streamsNodejsV24Compat
    f(Some("python_check_rng_state"), Some("disable_python_check_rng_state"), None, false), // pythonCheckRngState
    f(Some("immutable_api_prototypes"), Some("mutable_api_prototypes"), None, false), // shouldSetImmutablePrototype
    f(Some("fetch_iterable_type_support"), Some("no_fetch_iterable_type_support"), Some("2026-02-19"), false), // fetchIterableTypeSupport
    f(Some("env_module_nullable_support"), Some("no_env_module_nullable_support"), None, false), // envModuleNullableSupport
    f(Some("precise_timers"), Some("no_precise_timers"), None, true), // preciseTimers
    f(Some("fetch_iterable_type_support_override_adjustment"), Some("no_fetch_iterable_type_support_override_adjustment"), None, false), // fetchIterableTypeSupportOverrideAdjustment
    f(Some("strip_bom_in_read_all_text"), Some("do_not_strip_bom_in_read_all_text"), Some("2026-01-13"), false), // stripBomInReadAllText
    f(Some("allow_irrevocable_stub_storage"), None, None, false), // allowIrrevocableStubStorage
    f(Some("rpc_params_dup_stubs"), Some("rpc_params_transfer_stubs"), Some("2026-01-20"), false), // rpcParamsDupStubs
    f(Some("enable_nodejs_global_timers"), Some("no_nodejs_global_timers"), None, false), // enableNodejsGlobalTimers
    f(Some("streams_no_default_auto_allocate_chunk_size"), Some("streams_auto_allocate_chunk_size_default"), None, true), // noAutoAllocateChunkSize
    f(Some("python_workflows_implicit_dependencies"), Some("no_python_workflows_implicit_dependencies"), None, false), // pythonWorkflowsImplicitDeps
    f(Some("require_returns_default_export"), Some("require_returns_namespace"), Some("2026-01-22"), false), // requireReturnsDefaultExport
    f(Some("python_request_headers_preserve_commas"), Some("disable_python_request_headers_preserve_commas"), Some("2026-02-17"), false), // pythonRequestHeadersPreserveCommas
    f(Some("queue_expose_error_codes"), Some("no_queue_expose_error_codes"), Some("2026-03-12"), false), // queueExposeErrorCodes
    f(Some("text_decoder_replace_surrogates"), Some("disable_text_decoder_replace_surrogates"), Some("2026-02-24"), false), // textDecoderReplaceSurrogates
    f(Some("containers_pid_namespace"), Some("no_containers_pid_namespace"), Some("2026-04-01"), false), // containersPidNamespace
    f(Some("delete_all_deletes_alarm"), Some("delete_all_preserves_alarm"), Some("2026-02-24"), false), // deleteAllDeletesAlarm
    f(Some("unhandled_rejection_after_microtask_checkpoint"), Some("no_unhandled_rejection_after_microtask_checkpoint"), Some("2026-03-03"), false), // unhandledRejectionAfterMicrotaskCheckpoint
    f(Some("text_decoder_cjk_decoder"), Some("disable_text_decoder_cjk_decoder"), Some("2026-03-03"), false), // textDecoderCjkDecoder
    f(Some("websocket_close_reason_byte_limit"), Some("no_websocket_close_reason_byte_limit"), Some("2026-03-03"), false), // websocketCloseReasonByteLimit
    f(Some("enable_version_api"), None, None, true), // enableVersionApi
    f(Some("websocket_standard_binary_type"), Some("no_websocket_standard_binary_type"), Some("2026-03-17"), false), // websocketBinaryTypeDefault
    f(Some("writable_stream_spec_compliant_writer"), Some("no_writable_stream_spec_compliant_writer"), Some("2026-03-24"), false), // writableStreamSpecCompliantWriter
    f(Some("encoder_stream_spec_compliant_backpressure"), Some("no_encoder_stream_spec_compliant_backpressure"), Some("2026-03-24"), false), // encoderStreamSpecCompliantBackpressure
    f(Some("spec_compliant_property_attributes"), Some("no_spec_compliant_property_attributes"), None, true), // specCompliantPropertyAttributes
    f(Some("workflows_preserve_non_retryable_error_message"), Some("workflows_replace_non_retryable_error_message"), Some("2026-05-14"), false), // workflowsPreserveNonRetryableErrorMessage
    f(Some("web_socket_auto_reply_to_close"), Some("web_socket_manual_reply_to_close"), Some("2026-04-07"), false), // webSocketAutoReplyToClose
    f(Some("enable_ctx_version_metadata"), None, None, true), // enableCtxVersionMetadata
    f(Some("no_resizable_array_buffer_in_blob"), Some("resizable_array_buffer_in_blob"), None, false), // noResizableArrayBufferInBlob
    f(Some("diagnostics_channel_has_subscribers_getter"), Some("no_diagnostics_channel_has_subscribers_getter"), Some("2026-05-19"), false), // diagnosticsChannelHasSubscribersGetter
    f(Some("workflows_step_rollback"), None, None, true), // workflowsStepRollback
    f(Some("python_process_pth_files"), Some("disable_python_process_pth_files"), Some("2026-05-26"), false), // pythonProcessPthFiles
    f(Some("throw_on_not_implemented_tls_options"), Some("no_throw_on_not_implemented_tls_options"), Some("2026-06-16"), false), // throwOnNotImplementedTlsOptions
    f(Some("auto_grpc_convert"), None, None, true), // autoGrpcConvert
    f(Some("python_workers_20260610"), Some("no_python_workers_20260610"), None, false), // pythonWorkers20260610
    f(Some("enable_nodejs_inspector_local_dev"), None, None, true), // enableNodeJsInspectorLocalDev
    f(Some("d1_binding_jsrpc"), None, None, true), // d1BindingJsrpc
    f(Some("workflows_bindings_rpc"), None, None, true), // workflowsBindingsRpc
    f(Some("typescript_implemented_streams"), None, None, true), // typeScriptImplementedStreams
    f(Some("expose_draining_reader"), None, None, true), // exposeDrainingReader
    f(Some("workflows_enable_fast_engine_creation"), Some("workflows_disable_fast_engine_creation"), Some("2026-08-11"), false), // workflowsEnableFastEngineCreation
    f(Some("wasm_memory_discard"), None, None, true), // wasmMemoryDiscard
];

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags_and_dates_are_checked_as_workerd_checks_them() {
        let ok = resolve(Some("2024-09-23"), &flags(&["nodejs_compat"])).unwrap();
        assert!(ok.has("nodejs_compat"));
        assert!(ok.warnings.is_empty(), "{:?}", ok.warnings);
        let ok = resolve(Some("2024-09-23"), &flags(&["nodejs_zlib"])).unwrap();
        assert_eq!(ok.warnings.len(), 1, "{:?}", ok.warnings);
        assert!(ok.warnings[0].contains("nodejs_zlib"));
        let e = resolve(None, &flags(&["no_such_flag_at_all"])).unwrap_err();
        assert_eq!(e.code, "unknown_compatibility_flag");
        assert_eq!(e.message, "No such compatibility flag: no_such_flag_at_all");
        let e = resolve(None, &flags(&["nodejs_compat", "no_nodejs_compat"])).unwrap_err();
        assert_eq!(e.code, "conflicting_compatibility_flags");
        assert_eq!(
            resolve(Some("2024-13-01"), &[]).unwrap_err().code,
            "invalid_compatibility_date"
        );
        assert_eq!(
            resolve(Some("9999-01-01"), &[]).unwrap_err().code,
            "invalid_compatibility_date"
        );
        // A date turns on what became the default by then, and a disable
        // flag turns one back off.
        let by_date = resolve(Some("2023-03-14"), &[]).unwrap();
        assert!(by_date.has("response_redirect_url_standard"));
        assert!(!resolve(Some("2023-03-13"), &[])
            .unwrap()
            .has("response_redirect_url_standard"));
        let off = resolve(
            Some("2023-03-14"),
            &flags(&["response_redirect_url_original"]),
        )
        .unwrap();
        assert!(!off.has("response_redirect_url_standard"));
        assert_eq!(
            resolve(None, &flags(&["experimental"])).unwrap_err().code,
            "experimental_compatibility_flag"
        );
        let none = resolve(None, &[]).unwrap();
        assert!(none.enabled.is_empty() && none.warnings.is_empty());
    }

    #[test]
    fn the_table_has_no_duplicate_flag() {
        let mut seen = BTreeSet::new();
        for feat in FLAGS {
            for name in [feat.enable, feat.disable].into_iter().flatten() {
                assert!(seen.insert(name), "{name} twice");
            }
        }
        assert!(seen.len() > 100, "{} flags", seen.len());
    }
}
