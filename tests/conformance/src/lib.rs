//! One conformance suite, run unchanged against every durabus backend.
//!
//! Each case is a `pub async fn <property>(bus: &Bus)` that panics when the
//! backend breaks the property it is named after. Cases use only the public
//! [`durabus::Bus`] API, never engine internals, and assert behaviour that
//! NATS JetStream defines: a real nats-server is the oracle. Where backends
//! legitimately differ (byte accounting, for one), a case asserts only what
//! all share and its doc comment says so.
//!
//! Every case takes unique stream names and subjects ([`names`]) so cases can
//! share one server, and waits for conditions with bounded timeouts rather
//! than sleeps.
//!
//! A backend runs the suite with [`conformance_suite!`], which expands to one
//! `#[tokio::test]` per case:
//!
//! ```no_run
//! // tests/memory.rs
//! durabus_conformance::conformance_suite!(durabus::connect("memory:").await.expect("connect"));
//! # fn main() {}
//! ```
//!
//! The expression is evaluated once per case, inside that case's async test.
//! It yields a [`durabus::Bus`], or a `(Bus, guard)` tuple whose guard (a
//! `TempDir`, a server handle) lives until the case has finished and the bus
//! has been closed. The crate using the macro needs `tokio` as a dependency.
//!
//! A new backend joins with one file. For NATS, against one real server
//! shared by every case (`durabus-testkit` starts it on a free port):
//!
//! ```ignore
//! // tests/nats.rs
//! durabus_conformance::conformance_suite!(
//!     durabus::connect(&durabus_testkit::nats::NatsServer::shared().url())
//!         .await
//!         .expect("connect to nats")
//! );
//! ```

// A conformance case is a test: a failed expectation must panic with context.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod model;
mod support;

use std::any::Any;

pub use support::*;

use durabus::Bus;

/// What a suite test runs a case against: a bus, and whatever must outlive it.
pub struct Fixture {
    /// The backend under test.
    pub bus: Bus,
    guard: Box<dyn Any + Send>,
}

impl Fixture {
    /// Closes the bus (errors ignored: some cases close it themselves), then
    /// drops the guard, so a temp dir outlives the store that writes to it.
    pub async fn finish(self) {
        let _ = self.bus.close().await;
        drop(self.guard);
    }
}

impl From<Bus> for Fixture {
    fn from(bus: Bus) -> Self {
        Fixture {
            bus,
            guard: Box::new(()),
        }
    }
}

impl<G: Send + 'static> From<(Bus, G)> for Fixture {
    fn from((bus, guard): (Bus, G)) -> Self {
        Fixture {
            bus,
            guard: Box::new(guard),
        }
    }
}

/// Expands to one `#[tokio::test]` per conformance case, each evaluating
/// `$make` (a [`durabus::Bus`] or a `(Bus, guard)` tuple) for a fresh backend.
#[macro_export]
macro_rules! conformance_suite {
    ($make:expr) => {
        $crate::__conformance_tests! { $make;
            // CASES-BEGIN (kept equal to the case functions by a unit test)
            streams {
                create_stream_starts_empty,
                create_stream_with_equal_config_returns_existing_unchanged,
                create_stream_with_different_config_is_name_in_use,
                update_stream_changes_config_and_keeps_messages,
                update_stream_with_lower_max_msgs_evicts_oldest,
                update_stream_can_change_captured_subjects,
                update_unknown_stream_is_stream_not_found,
                stream_info_of_unknown_stream_is_stream_not_found,
                stream_info_reports_state,
                stream_config_round_trips_through_info,
                overlapping_subjects_across_streams_are_refused,
                stream_without_subjects_captures_its_own_name,
                list_streams_is_sorted_and_contains_created_streams,
                delete_stream_removes_messages_and_frees_subjects,
                delete_unknown_stream_is_stream_not_found,
                invalid_stream_name_is_refused_with_the_reason,
                invalid_stream_subject_names_the_token,
                invalid_config_is_refused_with_the_reason,
            }
            publish {
                sequences_start_at_one_and_increase_by_one,
                uncaptured_publish_returns_none_and_reaches_subscribers,
                captured_publish_reaches_live_subscribers,
                publish_preserves_subject_headers_and_payload,
                publish_to_invalid_subject_names_the_token,
                publish_batch_results_are_in_input_order,
                publish_batch_reports_each_failure_in_place,
                empty_and_large_payloads_round_trip,
                timestamps_never_decrease,
                concurrent_publishers_get_unique_contiguous_sequences,
                non_ascii_subjects_round_trip,
            }
            dedup {
                duplicate_msg_id_returns_original_seq_and_stores_nothing,
                distinct_msg_ids_are_all_stored,
                messages_without_id_are_never_duplicates,
                msg_ids_are_scoped_per_stream,
                msg_id_can_be_reused_after_duplicate_window,
                duplicate_inside_a_batch_is_stored_once,
                purged_or_deleted_msg_id_is_still_a_duplicate_inside_the_window,
            }
            expectations {
                expected_last_sequence_match_is_stored,
                expected_last_sequence_zero_on_empty_stream_is_stored,
                expected_last_sequence_mismatch_is_wrong_last_sequence_and_stores_nothing,
                expected_last_subject_sequence_is_checked_per_subject,
                expected_stream_mismatch_is_wrong_stream,
            }
            limits {
                max_msgs_evicts_oldest,
                max_bytes_evicts_oldest,
                max_msgs_per_subject_evicts_oldest_of_that_subject,
                max_age_expires_old_messages,
                max_msg_size_rejects_larger_messages,
                discard_new_rejects_when_full_with_stream_full,
                max_msgs_per_subject_evicts_oldest_even_with_discard_new,
                discard_new_per_subject_rejects_at_the_subject_limit,
            }
            purge_delete {
                purge_all_empties_stream_and_sets_first_seq_past_last,
                purge_by_subject_removes_only_matching,
                purge_keep_n_keeps_the_newest,
                purge_subject_with_keep_keeps_newest_of_that_subject,
                purge_up_to_seq_removes_lower_sequences,
                purge_of_empty_stream_removes_nothing,
                purge_of_unknown_stream_is_stream_not_found,
                deleted_message_leaves_a_gap_in_replay_and_get,
                deleting_a_missing_message_is_message_not_found,
                deleting_the_first_message_moves_first_seq,
                sequences_are_not_reused_after_deleting_the_last_message,
                deny_delete_and_deny_purge_are_enforced,
                rollup_sub_replaces_the_history_of_its_subject,
                rollup_all_leaves_only_the_rollup_message,
                rollup_needs_allow_rollup,
            }
            get {
                get_message_returns_the_stored_message,
                get_message_beyond_last_is_message_not_found,
                get_from_unknown_stream_is_stream_not_found,
                get_last_message_returns_newest_per_subject,
                get_last_message_without_match_is_message_not_found,
            }
            pubsub {
                star_matches_exactly_one_token,
                gt_matches_one_or_more_tokens,
                subscriber_receives_messages_in_publish_order,
                subscription_receives_only_messages_published_after_it,
                every_subscriber_receives_each_message,
                queue_group_delivers_each_message_to_exactly_one_member,
                dropping_a_subscription_unsubscribes,
                invalid_filter_names_the_token,
            }
            request_reply {
                request_receives_the_responders_reply,
                concurrent_requests_each_get_their_own_reply,
                request_without_responders_is_no_responders,
                request_to_a_silent_responder_times_out,
                request_to_invalid_subject_is_invalid_subject,
            }
            replay {
                replay_from_sequence_yields_stored_messages_in_order,
                replay_from_sequence_zero_is_invalid_argument,
                replay_from_sequence_below_first_starts_at_first,
                replay_from_time_starts_at_first_message_at_or_after_it,
                replay_from_time_finds_its_start_in_a_long_history,
                replay_new_yields_only_later_messages,
                replay_last_per_subject_yields_newest_of_each_then_live,
                replay_filter_yields_only_matching_subjects,
                replay_continues_live_after_history,
                replay_stop_at_end_ends_at_last_message_present_at_start,
                replay_stop_at_end_of_empty_stream_ends_immediately,
                replay_next_is_cancel_safe,
                replay_of_a_large_history_is_complete_and_ordered,
                replay_of_unknown_stream_is_stream_not_found,
                replay_with_invalid_filter_is_invalid_subject,
            }
            model_based {
                random_operations_match_the_jetstream_model,
            }
            close {
                close_is_idempotent,
                every_call_after_close_returns_closed,
                close_through_a_clone_closes_every_clone,
                close_ends_open_subscriptions_and_replays,
            }
            consumers {
                create_consumer_is_create_if_absent_and_a_change_is_name_in_use,
                a_backoff_sets_ack_wait_to_its_first_step,
                unknown_consumers_and_streams_are_not_found,
                list_consumers_is_sorted_and_delete_removes_one,
                update_consumer_changes_ack_wait_and_refuses_a_new_deliver_policy,
                deliver_all_fetches_every_message_in_order_with_metadata,
                deliver_policies_start_where_jetstream_starts,
                deliver_last_per_subject_yields_the_newest_of_each_subject,
                filter_subject_delivers_only_matching_messages,
                acked_messages_are_not_redelivered,
                sent_acks_are_applied_and_never_redelivered,
                unacked_messages_are_redelivered_after_ack_wait,
                nak_redelivers_at_once_or_after_its_delay,
                terminated_messages_are_never_redelivered,
                in_progress_postpones_redelivery,
                backoff_spaces_redeliveries_and_max_deliver_ends_them,
                max_ack_pending_holds_delivery_until_acks_arrive,
                ack_policy_none_never_redelivers,
                ack_policy_all_acks_everything_before,
                fetch_waits_up_to_its_expiry_for_new_messages,
                settling_twice_is_a_no_op,
                ephemeral_consumers_are_named_and_deliver,
                work_queue_removes_acked_messages_and_allows_one_consumer_per_subject,
                interest_retention_keeps_messages_until_every_consumer_acked,
            }
            runner {
                consume_acks_every_message_the_handler_completes,
                failing_messages_are_dead_lettered_once_with_their_origin,
                redrive_republishes_dead_letters_to_their_origin,
                stall_in_order_retries_a_message_before_taking_the_next,
                long_handlers_are_kept_alive_past_ack_wait,
                shutdown_finishes_in_flight_work_and_gives_back_the_rest,
                a_message_failing_every_attempt_reaches_the_dlq_after_max_attempts,
                a_message_whose_every_attempt_crashes_the_runner_reaches_the_dlq,
                a_panicking_handler_s_message_reaches_the_dlq_and_the_others_are_handled,
                a_handler_past_its_timeout_fails_the_attempt,
                stall_in_order_dead_letters_count_every_attempt,
                consume_refuses_a_max_deliver_without_a_delivery_after_the_last_attempt,
                the_runner_buffers_a_batch_ahead_and_shutdown_gives_it_back,
                closed_yields_the_error_when_the_consumer_is_deleted_under_the_runner,
                redrive_after_the_dlq_stream_was_recreated_loses_no_letter,
                redrive_leaves_a_letter_whose_msg_id_names_a_different_message,
            }
            kv {
                kv_bucket_uses_the_nats_layout,
                kv_put_then_get_returns_the_newest_value,
                kv_create_only_when_the_key_has_no_value,
                kv_update_is_compare_and_swap_on_the_revision,
                kv_delete_keeps_history_and_purge_drops_it,
                kv_history_keeps_the_newest_entries_up_to_the_limit,
                kv_entry_at_revision_returns_that_revision_of_the_key,
                kv_entry_at_time_returns_the_value_current_then,
                kv_keys_lists_keys_with_values_by_filter_or_prefix,
                kv_watch_yields_current_values_then_every_change_in_order,
                kv_watch_of_an_empty_bucket_is_caught_up_and_live,
                kv_watch_from_revision_and_updates_only,
                kv_watch_next_is_cancel_safe_and_the_watch_stays_live,
                kv_watch_is_a_stream,
                kv_invalid_key_is_refused_naming_it,
                kv_value_over_the_limit_names_both_sizes,
                kv_buckets_are_created_opened_listed_and_deleted,
                kv_entries_expire_after_the_ttl,
                kv_json_values_round_trip_and_bad_json_is_a_decode_error,
                kv_concurrent_update_json_counts_every_successful_swap,
                kv_update_json_gives_up_with_conflict_when_swaps_keep_losing,
            }
            requests {
                retried_request_succeeds_when_a_responder_appears_late,
                no_responders_after_the_retries_are_used_up,
                service_errors_arrive_typed_with_code_and_message,
                responders_skip_messages_without_a_reply_subject,
                request_many_collects_from_several_responders_and_stops_at_count_or_timeout,
                queue_group_responders_answer_each_request_once,
                responder_shutdown_finishes_requests_in_flight,
            }
            typed {
                json_values_round_trip_through_typed_subjects,
                msgpack_values_round_trip_through_typed_subjects,
                cbor_values_round_trip_through_typed_subjects,
                typed_publish_outside_the_pattern_is_refused_and_sends_nothing,
                typed_subscription_reports_undecodable_messages_and_goes_on,
                typed_requests_get_typed_replies_and_bad_requests_a_400,
                registry_dispatches_mixed_types_to_their_handlers,
                unknown_and_undecodable_types_go_to_the_dlq_with_the_reason,
                typed_consume_dead_letters_undecodable_payloads_at_once,
                typed_subscription_refuses_another_type_naming_both,
                typed_consume_dead_letters_another_type_at_once,
            }
            trace {
                default_propagation_adds_no_trace_outside_a_trace,
                trace_id_survives_publish_then_consume_and_the_handlers_publish,
                traceparent_is_generated_when_absent_and_kept_when_present,
                malformed_traceparent_is_replaced_and_ignored_on_receive,
                publish_batch_stamps_every_message_and_keeps_given_traceparents,
                correlation_id_and_service_name_round_trip,
                request_carries_the_callers_trace_to_the_responder,
                propagation_off_publishes_messages_unchanged,
            }
            rooms {
                persisted_room_late_joiner_gets_the_scrollback,
                persisted_room_scrollback_is_bounded_by_its_history,
                ephemeral_room_has_no_scrollback,
                offline_peer_of_a_persisted_room_resumes_from_its_last_ack_without_repeats,
                a_peer_never_receives_its_own_messages,
                rooms_whose_names_sanitize_alike_stay_apart,
                a_members_next_is_cancel_safe_and_a_stream,
            }
            names {
                longest_allowed_stream_and_consumer_names_work_from_create_to_remove,
                names_one_byte_over_the_limit_are_refused_with_name_too_long,
                longest_allowed_kv_bucket_name_works_from_create_to_delete,
            }
            headers {
                headers_nats_cannot_carry_are_refused_and_nothing_is_stored,
                legal_headers_round_trip_unchanged,
            }
            handles {
                stream_handle_reads_and_changes_its_own_stream,
                handles_to_missing_streams_and_consumers_fail_at_their_first_call,
                publish_stored_is_not_captured_where_no_stream_captures_the_subject,
                stream_handle_publish_lands_in_its_stream_or_fails,
                consumer_handle_deliveries_ack_nak_term_and_in_progress,
                messages_yields_in_order_and_redelivers_a_nak,
                messages_next_is_cancel_safe,
                messages_stop_gives_back_what_was_not_handed_out,
                messages_reports_a_deleted_consumer_and_ends_when_the_bus_closes,
            }
            // CASES-END
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    ($make:expr; $($module:ident { $($case:ident),* $(,)? })*) => {
        $(
            mod $module {
                $(
                    #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $case() {
                        let fixture = $crate::Fixture::from($make);
                        $crate::$module::$case(&fixture.bus).await;
                        fixture.finish().await;
                    }
                )*
            }
        )*
    };
}

// One module per area; each file's opening comment says what it covers.
pub mod close;
pub mod consumers;
pub mod dedup;
pub mod expectations;
pub mod get;
pub mod handles;
pub mod headers;
pub mod kv;
pub mod limits;
pub mod model_based;
pub mod names;
pub mod publish;
pub mod pubsub;
pub mod purge_delete;
pub mod replay;
pub mod request_reply;
pub mod requests;
pub mod rooms;
pub mod runner;
pub mod streams;
pub mod trace;
pub mod typed;

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// The macro's case list and the case functions stay the same set, so a
    /// new case cannot be forgotten by the suite.
    #[test]
    fn macro_lists_every_case_function() {
        let src = include_str!("lib.rs");
        let begin = src.find("// CASES-BEGIN").unwrap();
        let end = src.find("// CASES-END").unwrap();
        let mut listed = BTreeSet::new();
        let mut module = "";
        for line in src[begin..end].lines().skip(1) {
            let t = line.trim().trim_end_matches(',');
            if let Some(m) = t.strip_suffix(" {") {
                module = m;
            } else if !t.is_empty() && t != "}" {
                listed.insert(format!("{module}::{t}"));
            }
        }
        let mut defined = BTreeSet::new();
        for line in src[end..].lines() {
            if let Some(file) = line
                .strip_prefix("pub mod ")
                .and_then(|m| m.strip_suffix(';'))
            {
                // A case module in its own file, `src/<module>.rs`.
                let path = format!("{}/src/{file}.rs", env!("CARGO_MANIFEST_DIR"));
                let body = std::fs::read_to_string(&path).unwrap();
                for rest in body.lines().filter_map(|l| l.strip_prefix("pub async fn ")) {
                    let name = rest.split(['(', '<']).next().unwrap();
                    defined.insert(format!("{file}::{name}"));
                }
            }
        }
        assert_eq!(listed, defined);
        assert!(listed.len() >= 40, "{}", listed.len());
    }
}
