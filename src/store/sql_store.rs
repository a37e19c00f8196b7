//! The one implementation of [`ConversationStore`](super::ConversationStore)
//! over sqlx, expanded once per backend. A backend module supplies its
//! pool and row types, its SQL folder (`sql/<backend>/*.sql`, so each
//! backend keeps its own dialect) and a few helpers for what differs:
//!
//! - `BACKEND`, `MIGRATOR`, `transient(code)` (retryable error codes);
//! - `db_time(t)`, `time(row, col)`, `opt_time(row, col)`: how times are
//!   stored (timestamptz or integer milliseconds);
//! - `db_list(&[String])`: how a list is bound (an array or JSON text);
//! - `insert_run(conn, run)`: a run of message records in one go;
//! - `Rating`: the integer type of `feedback.rating`.
//!
//! Every database call is bounded by the store's call timeout: a database
//! that hangs rather than refuses counts as unreachable, so the writer
//! spills instead of stalling.

macro_rules! sql_store {
    (
        store: $Store:ident,
        pool: $Pool:ty,
        row: $Row:ty,
        conn: $Conn:ty,
        backend: $backend:expr,
        dir: $dir:literal $(,)?
    ) => {
        use std::collections::HashMap;

        use sqlx::Row;

        use super::backend::{Backend, ConversationStore, StoreFuture, StoredConversation};
        use super::export::ExportFilter;
        use super::inbox::InboundUpdate;
        use super::operator::OperatorRow;
        use super::record::{
            ConversationRecord, FeedbackRecord, Handoff, MessageRecord, ModerationRecord, Record,
            parse_role, role_str,
        };
        use super::retention::{AuditEvent, Deleted};
        use super::stats::{Stats, StatsParts};
        use super::{Error, Result, UserKey};

        macro_rules! sql {
            ($name:literal) => {
                include_str!(concat!("sql/", $dir, "/", $name, ".sql"))
            };
        }

        /// Classifies an error from a statement of the write path.
        fn write_err(record: &Record, e: sqlx::Error) -> Error {
            let reason = format!("{} {}: {e}", record.kind(), record.id());
            let is_transient = match &e {
                sqlx::Error::Database(db) => db.code().is_some_and(|c| transient(&c)),
                sqlx::Error::Encode(_)
                | sqlx::Error::Decode(_)
                | sqlx::Error::InvalidArgument(_) => false,
                _ => true,
            };
            if is_transient {
                Error::Unavailable {
                    backend: BACKEND,
                    reason,
                }
            } else {
                Error::Rejected {
                    backend: BACKEND,
                    reason,
                }
            }
        }

        fn unavailable(e: sqlx::Error) -> Error {
            Error::Unavailable {
                backend: BACKEND,
                reason: e.to_string(),
            }
        }

        fn read_err(e: sqlx::Error) -> Error {
            Error::Database {
                backend: BACKEND,
                reason: e.to_string(),
            }
        }

        fn corrupt(what: &str, value: &str) -> Error {
            Error::Database {
                backend: BACKEND,
                reason: format!("unexpected {what} {value:?} in the database"),
            }
        }

        fn to_u32(v: Option<i64>) -> Option<u32> {
            v.and_then(|v| u32::try_from(v).ok())
        }

        fn scores_json(m: &MessageRecord) -> Option<String> {
            if m.scores.is_empty() {
                None
            } else {
                serde_json::to_string(&m.scores).ok()
            }
        }

        fn reply_kind(m: &MessageRecord) -> Option<String> {
            m.grounding.as_ref().map(|g| g.kind.as_str().to_string())
        }

        fn passages_json(m: &MessageRecord) -> Option<String> {
            m.grounding
                .as_ref()
                .and_then(|g| serde_json::to_string(&g.passages).ok())
        }

        fn confidence(m: &MessageRecord) -> Option<f64> {
            m.grounding.as_ref().map(|g| f64::from(g.confidence))
        }

        async fn insert(conn: &mut $Conn, record: &Record) -> Result<()> {
            let fail = |e| write_err(record, e);
            match record {
                Record::Conversation(c) => {
                    sqlx::query(sql!("insert_conversation"))
                        .bind(&c.id)
                        .bind(&c.platform)
                        .bind(&c.channel)
                        .bind(c.user_key.as_str())
                        .bind(db_time(c.started_at))
                        .bind(c.topic.as_deref())
                        .bind(c.style.as_deref())
                        .execute(&mut *conn)
                        .await
                        .map_err(fail)?;
                }
                Record::Update(u) => {
                    let done = sqlx::query(sql!("update_conversation"))
                        .bind(&u.conversation_id)
                        .bind(u.ended)
                        .bind(db_time(u.at))
                        .bind(u.handoff.map(Handoff::as_str))
                        .bind(u.topic.as_deref())
                        .bind(u.style.as_deref())
                        .execute(&mut *conn)
                        .await
                        .map_err(fail)?;
                    if done.rows_affected() == 0 {
                        return Err(Error::Rejected {
                            backend: BACKEND,
                            reason: format!(
                                "update {}: no conversation {}",
                                u.id, u.conversation_id
                            ),
                        });
                    }
                }
                Record::Message(m) => {
                    sqlx::query(sql!("insert_message"))
                        .bind(&m.id)
                        .bind(&m.conversation_id)
                        .bind(role_str(m))
                        .bind(&m.content)
                        .bind(db_time(m.created_at))
                        .bind(m.model_version.as_deref())
                        .bind(m.latency_ms.map(i64::from))
                        .bind(m.prompt_tokens.map(i64::from))
                        .bind(m.completion_tokens.map(i64::from))
                        .bind(m.verdict.map(|v| v.as_str()))
                        .bind(scores_json(m))
                        .bind(reply_kind(m))
                        .bind(passages_json(m))
                        .bind(confidence(m))
                        .bind(m.operator_id.as_deref())
                        .execute(&mut *conn)
                        .await
                        .map_err(fail)?;
                }
                Record::Moderation(e) => {
                    sqlx::query(sql!("insert_moderation"))
                        .bind(&e.id)
                        .bind(&e.conversation_id)
                        .bind(e.message_id.as_deref())
                        .bind(db_time(e.created_at))
                        .bind(&e.category)
                        .bind(e.score)
                        .bind(e.verdict.as_str())
                        .bind(e.detail.as_deref())
                        .execute(&mut *conn)
                        .await
                        .map_err(fail)?;
                }
                Record::Feedback(f) => {
                    sqlx::query(sql!("insert_feedback"))
                        .bind(&f.id)
                        .bind(&f.conversation_id)
                        .bind(f.message_id.as_deref())
                        .bind(Rating::from(f.rating))
                        .bind(f.comment.as_deref())
                        .bind(f.user_key.as_str())
                        .bind(db_time(f.created_at))
                        .execute(&mut *conn)
                        .await
                        .map_err(fail)?;
                }
            }
            Ok(())
        }

        fn conversation_from_row(row: &$Row) -> Result<StoredConversation> {
            let handoff: String = row.try_get("handoff_state").map_err(read_err)?;
            Ok(StoredConversation {
                record: ConversationRecord {
                    id: row.try_get("id").map_err(read_err)?,
                    platform: row.try_get("platform").map_err(read_err)?,
                    channel: row.try_get("channel").map_err(read_err)?,
                    user_key: UserKey::from_stored(row.try_get("user_key").map_err(read_err)?),
                    started_at: time(row, "started_at")?,
                    topic: row.try_get("topic").map_err(read_err)?,
                    style: row.try_get("style").map_err(read_err)?,
                },
                ended_at: opt_time(row, "ended_at")?,
                handoff: Handoff::parse(&handoff)
                    .ok_or_else(|| corrupt("handoff state", &handoff))?,
                handoff_at: opt_time(row, "handoff_at")?,
                claimed_by: row.try_get("claimed_by").map_err(read_err)?,
                messages: Vec::new(),
            })
        }

        fn message_from_row(row: &$Row) -> Result<MessageRecord> {
            let role: String = row.try_get("role").map_err(read_err)?;
            let verdict: Option<String> = row.try_get("moderation_verdict").map_err(read_err)?;
            let scores: Option<String> = row.try_get("moderation_scores").map_err(read_err)?;
            let kind: Option<String> = row.try_get("reply_kind").map_err(read_err)?;
            let passages: Option<String> = row.try_get("passages").map_err(read_err)?;
            let confidence: Option<f64> = row.try_get("retrieval_confidence").map_err(read_err)?;
            let grounding = match kind {
                Some(k) => Some(super::Grounding {
                    kind: super::ReplyKind::parse(&k).ok_or_else(|| corrupt("reply kind", &k))?,
                    passages: match passages {
                        Some(p) => serde_json::from_str(&p).map_err(|_| corrupt("passages", &p))?,
                        None => Vec::new(),
                    },
                    confidence: confidence.unwrap_or(0.0) as f32,
                }),
                None => None,
            };
            let (role, by_operator) = parse_role(&role).ok_or_else(|| corrupt("role", &role))?;
            let operator_id: Option<String> = row.try_get("operator_id").map_err(read_err)?;
            if by_operator != operator_id.is_some() {
                return Err(corrupt(
                    "operator message without operator",
                    &format!("{operator_id:?}"),
                ));
            }
            let decision: Option<String> = row.try_get("review_decision").map_err(read_err)?;
            let conversation_id: String = row.try_get("conversation_id").map_err(read_err)?;
            let id: String = row.try_get("id").map_err(read_err)?;
            let review = match decision {
                Some(d) => Some(super::Review {
                    message_id: id.clone(),
                    conversation_id: conversation_id.clone(),
                    operator_id: row.try_get("review_operator").map_err(read_err)?,
                    decision: super::ReviewDecision::parse(&d)
                        .ok_or_else(|| corrupt("review decision", &d))?,
                    correction: row.try_get("review_correction").map_err(read_err)?,
                    created_at: time(row, "review_at")?,
                }),
                None => None,
            };
            Ok(MessageRecord {
                id,
                conversation_id,
                role,
                content: row.try_get("content").map_err(read_err)?,
                created_at: time(row, "created_at")?,
                model_version: row.try_get("model_version").map_err(read_err)?,
                latency_ms: to_u32(row.try_get("latency_ms").map_err(read_err)?),
                prompt_tokens: to_u32(row.try_get("prompt_tokens").map_err(read_err)?),
                completion_tokens: to_u32(row.try_get("completion_tokens").map_err(read_err)?),
                verdict: match verdict {
                    Some(v) => {
                        Some(super::Verdict::parse(&v).ok_or_else(|| corrupt("verdict", &v))?)
                    }
                    None => None,
                },
                scores: match scores {
                    Some(s) => serde_json::from_str(&s).map_err(|_| corrupt("scores", &s))?,
                    None => Default::default(),
                },
                grounding,
                operator_id,
                review,
            })
        }

        fn feedback_from_row(row: &$Row) -> Result<FeedbackRecord> {
            let rating: Rating = row.try_get("rating").map_err(read_err)?;
            Ok(FeedbackRecord {
                id: row.try_get("id").map_err(read_err)?,
                conversation_id: row.try_get("conversation_id").map_err(read_err)?,
                message_id: row.try_get("message_id").map_err(read_err)?,
                rating: u8::try_from(rating).map_err(|_| corrupt("rating", &rating.to_string()))?,
                comment: row.try_get("comment").map_err(read_err)?,
                user_key: UserKey::from_stored(row.try_get("user_key").map_err(read_err)?),
                created_at: time(row, "created_at")?,
            })
        }

        fn moderation_from_row(row: &$Row) -> Result<ModerationRecord> {
            let verdict: String = row.try_get("verdict").map_err(read_err)?;
            Ok(ModerationRecord {
                id: row.try_get("id").map_err(read_err)?,
                conversation_id: row.try_get("conversation_id").map_err(read_err)?,
                message_id: row.try_get("message_id").map_err(read_err)?,
                created_at: time(row, "created_at")?,
                category: row.try_get("category").map_err(read_err)?,
                score: row.try_get("score").map_err(read_err)?,
                verdict: super::Verdict::parse(&verdict)
                    .ok_or_else(|| corrupt("verdict", &verdict))?,
                detail: row.try_get("detail").map_err(read_err)?,
            })
        }

        fn audit_from_row(row: &$Row) -> Result<AuditEvent> {
            let detail: Option<String> = row.try_get("detail").map_err(read_err)?;
            Ok(AuditEvent {
                id: row.try_get("id").map_err(read_err)?,
                created_at: time(row, "created_at")?,
                actor: row.try_get("actor").map_err(read_err)?,
                action: row.try_get("action").map_err(read_err)?,
                conversation_id: row.try_get("conversation_id").map_err(read_err)?,
                detail: match detail {
                    Some(d) => {
                        Some(serde_json::from_str(&d).map_err(|_| corrupt("audit detail", &d))?)
                    }
                    None => None,
                },
            })
        }

        async fn stats_rows(
            pool: &$Pool,
            sql: &'static str,
            cols: &[&str],
        ) -> Result<Vec<(String, String, Vec<i64>)>> {
            let rows = sqlx::query(sql).fetch_all(pool).await.map_err(read_err)?;
            rows.iter()
                .map(|r| super::stats::decode_stats_row(r, cols).map_err(read_err))
                .collect()
        }

        impl $Store {
            /// The pool, for queries this module does not offer.
            pub fn pool(&self) -> &$Pool {
                &self.pool
            }

            async fn load_messages(
                &self,
                ids: &[String],
            ) -> Result<HashMap<String, Vec<MessageRecord>>> {
                let rows = sqlx::query(sql!("select_messages"))
                    .bind(db_list(ids)?)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(read_err)?;
                let mut out: HashMap<String, Vec<MessageRecord>> = HashMap::new();
                for row in &rows {
                    let m = message_from_row(row)?;
                    out.entry(m.conversation_id.clone()).or_default().push(m);
                }
                Ok(out)
            }

            /// `fut` within the call timeout; past it the database counts
            /// as unreachable.
            async fn timed<T>(
                &self,
                fut: impl std::future::Future<Output = Result<T>>,
            ) -> Result<T> {
                match tokio::time::timeout(self.call_timeout, fut).await {
                    Ok(r) => r,
                    Err(_) => Err(Error::Unavailable {
                        backend: BACKEND,
                        reason: format!("no answer within {:?}", self.call_timeout),
                    }),
                }
            }
        }

        impl ConversationStore for $Store {
            fn backend(&self) -> Backend {
                $backend
            }

            fn display_url(&self) -> &str {
                &self.url
            }

            fn migrate(&self) -> StoreFuture<'_, ()> {
                Box::pin(async move {
                    MIGRATOR.run(&self.pool).await.map_err(|e| Error::Migrate {
                        url: self.url.clone(),
                        reason: e.to_string(),
                    })
                })
            }

            fn schema_version(&self) -> StoreFuture<'_, Option<i64>> {
                Box::pin(self.timed(async move {
                    let present: bool = sqlx::query_scalar(sql!("has_migrations_table"))
                        .fetch_one(&self.pool)
                        .await
                        .map_err(read_err)?;
                    if !present {
                        return Ok(None);
                    }
                    sqlx::query_scalar(sql!("schema_version"))
                        .fetch_one(&self.pool)
                        .await
                        .map_err(read_err)
                }))
            }

            fn write_batch<'a>(&'a self, records: &'a [Record]) -> StoreFuture<'a, ()> {
                Box::pin(self.timed(async move {
                    if records.is_empty() {
                        return Ok(());
                    }
                    // Failing to get a connection or to commit is the
                    // database's state, never the data's.
                    let mut tx = self.pool.begin().await.map_err(unavailable)?;
                    let mut i = 0;
                    while i < records.len() {
                        // A run of messages (the bulk of the traffic) goes
                        // in one go where the backend can.
                        let run = records[i..]
                            .iter()
                            .take_while(|r| matches!(r, Record::Message(_)))
                            .count();
                        if run > 1 {
                            insert_run(&mut tx, &records[i..i + run]).await?;
                            i += run;
                        } else {
                            insert(&mut tx, &records[i]).await?;
                            i += 1;
                        }
                    }
                    tx.commit().await.map_err(unavailable)
                }))
            }

            fn conversation<'a>(
                &'a self,
                id: &'a str,
            ) -> StoreFuture<'a, Option<StoredConversation>> {
                Box::pin(self.timed(async move {
                    let row = sqlx::query(sql!("select_conversation"))
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(read_err)?;
                    let Some(row) = row else { return Ok(None) };
                    let mut c = conversation_from_row(&row)?;
                    let mut msgs = self.load_messages(&[id.to_string()]).await?;
                    c.messages = msgs.remove(id).unwrap_or_default();
                    Ok(Some(c))
                }))
            }

            fn feedback<'a>(
                &'a self,
                conversation_id: &'a str,
            ) -> StoreFuture<'a, Vec<FeedbackRecord>> {
                Box::pin(self.timed(async move {
                    let rows = sqlx::query(sql!("select_feedback"))
                        .bind(conversation_id)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(read_err)?;
                    rows.iter().map(feedback_from_row).collect()
                }))
            }

            fn moderation_events<'a>(
                &'a self,
                conversation_id: &'a str,
            ) -> StoreFuture<'a, Vec<ModerationRecord>> {
                Box::pin(self.timed(async move {
                    let rows = sqlx::query(sql!("select_moderation"))
                        .bind(conversation_id)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(read_err)?;
                    rows.iter().map(moderation_from_row).collect()
                }))
            }

            fn select<'a>(
                &'a self,
                filter: &'a ExportFilter,
                after: Option<&'a str>,
                limit: u32,
            ) -> StoreFuture<'a, Vec<StoredConversation>> {
                Box::pin(self.timed(async move {
                    let rows = sqlx::query(sql!("select_page"))
                        .bind(after)
                        .bind(filter.since.map(db_time))
                        .bind(filter.until.map(db_time))
                        .bind(db_list(&filter.platforms)?)
                        .bind(filter.exclude_handoff)
                        .bind(filter.exclude_flagged)
                        .bind(filter.min_rating)
                        .bind(i64::from(filter.min_turns))
                        .bind(i64::from(limit))
                        .fetch_all(&self.pool)
                        .await
                        .map_err(read_err)?;
                    let mut out = rows
                        .iter()
                        .map(conversation_from_row)
                        .collect::<Result<Vec<_>>>()?;
                    let ids: Vec<String> = out.iter().map(|c| c.record.id.clone()).collect();
                    let mut msgs = self.load_messages(&ids).await?;
                    for c in &mut out {
                        c.messages = msgs.remove(&c.record.id).unwrap_or_default();
                    }
                    Ok(out)
                }))
            }

            fn idle_conversations<'a>(
                &'a self,
                before: chrono::DateTime<chrono::Utc>,
                after: Option<&'a str>,
                limit: u32,
            ) -> StoreFuture<'a, Vec<String>> {
                Box::pin(self.timed(async move {
                    sqlx::query_scalar(sql!("select_idle"))
                        .bind(db_time(before))
                        .bind(after)
                        .bind(i64::from(limit))
                        .fetch_all(&self.pool)
                        .await
                        .map_err(read_err)
                }))
            }

            fn user_conversations<'a>(
                &'a self,
                platform: &'a str,
                user: &'a UserKey,
            ) -> StoreFuture<'a, Vec<String>> {
                Box::pin(self.timed(async move {
                    sqlx::query_scalar(sql!("select_user_conversations"))
                        .bind(platform)
                        .bind(user.as_str())
                        .fetch_all(&self.pool)
                        .await
                        .map_err(read_err)
                }))
            }

            fn delete_conversations<'a>(
                &'a self,
                ids: &'a [String],
                rater: Option<&'a UserKey>,
                dry_run: bool,
            ) -> StoreFuture<'a, Deleted> {
                Box::pin(self.timed(async move {
                    let rater = rater.map(UserKey::as_str);
                    if ids.is_empty() && rater.is_none() {
                        return Ok(Deleted::default());
                    }
                    let list = db_list(ids)?;
                    if dry_run {
                        let row = sqlx::query(sql!("count_deletable"))
                            .bind(&list)
                            .bind(rater)
                            .fetch_one(&self.pool)
                            .await
                            .map_err(read_err)?;
                        let n = |col: &str| -> Result<u64> {
                            let v: i64 = row.try_get(col).map_err(read_err)?;
                            Ok(u64::try_from(v).unwrap_or(0))
                        };
                        return Ok(Deleted {
                            conversations: n("conversations")?,
                            messages: n("messages")?,
                            feedback: n("feedback")?,
                            moderation_events: n("moderation_events")?,
                            kept_updates: 0,
                        });
                    }
                    // Children first: the foreign keys hold throughout.
                    // Each statement takes the ids; the feedback one also
                    // the rater.
                    let mut tx = self.pool.begin().await.map_err(unavailable)?;
                    // Reviews (and their corrections) go with the replies
                    // they review; their count is part of the messages'.
                    let mut n = [0u64; 5];
                    let statements = [
                        (sql!("delete_reviews"), false),
                        (sql!("delete_moderation"), false),
                        (sql!("delete_feedback"), true),
                        (sql!("delete_messages"), false),
                        (sql!("delete_conversations"), false),
                    ];
                    for (count, (statement, takes_rater)) in n.iter_mut().zip(statements) {
                        let mut q = sqlx::query(statement).bind(&list);
                        if takes_rater {
                            q = q.bind(rater);
                        }
                        *count = q.execute(&mut *tx).await.map_err(read_err)?.rows_affected();
                    }
                    tx.commit().await.map_err(read_err)?;
                    let [
                        _reviews,
                        moderation_events,
                        feedback,
                        messages,
                        conversations,
                    ] = n;
                    Ok(Deleted {
                        conversations,
                        messages,
                        feedback,
                        moderation_events,
                        kept_updates: 0,
                    })
                }))
            }

            fn setting<'a>(&'a self, name: &'a str) -> StoreFuture<'a, Option<String>> {
                Box::pin(self.timed(async move {
                    sqlx::query_scalar(sql!("select_setting"))
                        .bind(name)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(read_err)
                }))
            }

            fn set_setting_once<'a>(
                &'a self,
                name: &'a str,
                value: &'a str,
            ) -> StoreFuture<'a, ()> {
                Box::pin(self.timed(async move {
                    sqlx::query(sql!("insert_setting"))
                        .bind(name)
                        .bind(value)
                        .execute(&self.pool)
                        .await
                        .map_err(read_err)?;
                    Ok(())
                }))
            }

            fn write_audit<'a>(&'a self, event: &'a AuditEvent) -> StoreFuture<'a, ()> {
                Box::pin(self.timed(async move {
                    let detail = event.detail.as_ref().map(|d| d.to_string());
                    sqlx::query(sql!("insert_audit"))
                        .bind(&event.id)
                        .bind(db_time(event.created_at))
                        .bind(&event.actor)
                        .bind(&event.action)
                        .bind(event.conversation_id.as_deref())
                        .bind(detail)
                        .execute(&self.pool)
                        .await
                        .map_err(read_err)?;
                    Ok(())
                }))
            }

            fn audit_events(&self, limit: u32) -> StoreFuture<'_, Vec<AuditEvent>> {
                Box::pin(self.timed(async move {
                    let rows = sqlx::query(sql!("select_audit"))
                        .bind(i64::from(limit))
                        .fetch_all(&self.pool)
                        .await
                        .map_err(read_err)?;
                    rows.iter().map(audit_from_row).collect()
                }))
            }

            fn insert_operator<'a>(&'a self, row: &'a OperatorRow) -> StoreFuture<'a, bool> {
                Box::pin(self.timed(async move {
                    let done = sqlx::query(sql!("insert_operator"))
                        .bind(&row.id)
                        .bind(&row.name)
                        .bind(&row.password_hash)
                        .bind(row.must_change)
                        .bind(db_time(row.created_at))
                        .bind(db_time(row.password_set_at))
                        .bind(i64::from(row.failed_logins))
                        .bind(row.locked_until.map(db_time))
                        .execute(&self.pool)
                        .await
                        .map_err(read_err)?;
                    Ok(done.rows_affected() == 1)
                }))
            }

            fn operators<'a>(&'a self, name: Option<&'a str>) -> StoreFuture<'a, Vec<OperatorRow>> {
                Box::pin(self.timed(async move {
                    let rows = sqlx::query(sql!("select_operators"))
                        .bind(name)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(read_err)?;
                    rows.iter()
                        .map(|row| {
                            let failed: i64 = row.try_get("failed_logins").map_err(read_err)?;
                            Ok(OperatorRow {
                                id: row.try_get("id").map_err(read_err)?,
                                name: row.try_get("name").map_err(read_err)?,
                                password_hash: row.try_get("password_hash").map_err(read_err)?,
                                must_change: row.try_get("must_change").map_err(read_err)?,
                                created_at: time(row, "created_at")?,
                                password_set_at: time(row, "password_set_at")?,
                                failed_logins: u32::try_from(failed).unwrap_or(u32::MAX),
                                locked_until: opt_time(row, "locked_until")?,
                            })
                        })
                        .collect()
                }))
            }

            fn update_operator<'a>(&'a self, row: &'a OperatorRow) -> StoreFuture<'a, bool> {
                Box::pin(self.timed(async move {
                    let done = sqlx::query(sql!("update_operator"))
                        .bind(&row.id)
                        .bind(&row.password_hash)
                        .bind(row.must_change)
                        .bind(db_time(row.password_set_at))
                        .bind(i64::from(row.failed_logins))
                        .bind(row.locked_until.map(db_time))
                        .execute(&self.pool)
                        .await
                        .map_err(read_err)?;
                    Ok(done.rows_affected() == 1)
                }))
            }

            fn delete_operator<'a>(&'a self, name: &'a str) -> StoreFuture<'a, bool> {
                Box::pin(self.timed(async move {
                    let done = sqlx::query(sql!("delete_operator"))
                        .bind(name)
                        .execute(&self.pool)
                        .await
                        .map_err(read_err)?;
                    Ok(done.rows_affected() == 1)
                }))
            }

            fn handoff_queue(&self, limit: u32) -> StoreFuture<'_, Vec<StoredConversation>> {
                Box::pin(self.timed(async move {
                    let rows = sqlx::query(sql!("select_handoff_queue"))
                        .bind(i64::from(limit))
                        .fetch_all(&self.pool)
                        .await
                        .map_err(read_err)?;
                    rows.iter().map(conversation_from_row).collect()
                }))
            }

            fn open_handoff<'a>(
                &'a self,
                platform: &'a str,
                channel: &'a str,
            ) -> StoreFuture<'a, Option<StoredConversation>> {
                Box::pin(self.timed(async move {
                    let row = sqlx::query(sql!("select_open_handoff"))
                        .bind(platform)
                        .bind(channel)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(read_err)?;
                    row.as_ref().map(conversation_from_row).transpose()
                }))
            }

            fn claim<'a>(
                &'a self,
                conversation_id: &'a str,
                operator: &'a str,
            ) -> StoreFuture<'a, bool> {
                Box::pin(self.timed(async move {
                    let done = sqlx::query(sql!("claim"))
                        .bind(conversation_id)
                        .bind(operator)
                        .bind(db_time(chrono::Utc::now()))
                        .execute(&self.pool)
                        .await
                        .map_err(read_err)?;
                    Ok(done.rows_affected() == 1)
                }))
            }

            fn release<'a>(&'a self, conversation_id: &'a str) -> StoreFuture<'a, bool> {
                Box::pin(self.timed(async move {
                    let done = sqlx::query(sql!("release"))
                        .bind(conversation_id)
                        .bind(db_time(chrono::Utc::now()))
                        .execute(&self.pool)
                        .await
                        .map_err(read_err)?;
                    Ok(done.rows_affected() == 1)
                }))
            }

            fn message_conversation<'a>(
                &'a self,
                message_id: &'a str,
            ) -> StoreFuture<'a, Option<String>> {
                Box::pin(self.timed(async move {
                    sqlx::query_scalar(sql!("select_reply_conversation"))
                        .bind(message_id)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(read_err)
                }))
            }

            fn write_review<'a>(&'a self, review: &'a super::Review) -> StoreFuture<'a, ()> {
                Box::pin(self.timed(async move {
                    sqlx::query(sql!("insert_review"))
                        .bind(&review.message_id)
                        .bind(&review.conversation_id)
                        .bind(&review.operator_id)
                        .bind(review.decision.as_str())
                        .bind(review.correction.as_deref())
                        .bind(db_time(review.created_at))
                        .execute(&self.pool)
                        .await
                        .map_err(read_err)?;
                    Ok(())
                }))
            }

            fn review_queue(
                &self,
                sample_every: u32,
                limit: u32,
            ) -> StoreFuture<'_, Vec<super::ReviewItem>> {
                Box::pin(self.timed(async move {
                    let rows = sqlx::query(sql!("select_review_queue"))
                        .bind(i64::from(sample_every.max(1)))
                        .bind(i64::from(limit))
                        .fetch_all(&self.pool)
                        .await
                        .map_err(read_err)?;
                    rows.iter()
                        .map(|row| {
                            Ok(super::ReviewItem {
                                message: message_from_row(row)?,
                                platform: row.try_get("platform").map_err(read_err)?,
                                reason: row.try_get("reason").map_err(read_err)?,
                            })
                        })
                        .collect()
                }))
            }

            fn conversation_audit<'a>(
                &'a self,
                conversation_id: &'a str,
            ) -> StoreFuture<'a, Vec<AuditEvent>> {
                Box::pin(self.timed(async move {
                    let rows = sqlx::query(sql!("select_conversation_audit"))
                        .bind(conversation_id)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(read_err)?;
                    rows.iter().map(audit_from_row).collect()
                }))
            }

            fn accept_update<'a>(
                &'a self,
                update: &'a InboundUpdate,
                replica: &'a str,
            ) -> StoreFuture<'a, bool> {
                Box::pin(self.timed(async move {
                    let done = sqlx::query(sql!("insert_update"))
                        .bind(&update.platform)
                        .bind(update.update_id)
                        .bind(&update.chat_key)
                        .bind(&update.payload)
                        .bind(db_time(chrono::Utc::now()))
                        .bind(replica)
                        .execute(&self.pool)
                        .await
                        .map_err(read_err)?;
                    Ok(done.rows_affected() == 1)
                }))
            }

            fn next_update<'a>(
                &'a self,
                platform: &'a str,
                chat: &'a str,
            ) -> StoreFuture<'a, Option<InboundUpdate>> {
                Box::pin(self.timed(async move {
                    let row = sqlx::query(sql!("next_update"))
                        .bind(platform)
                        .bind(chat)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(read_err)?;
                    let Some(row) = row else { return Ok(None) };
                    let update_id: i64 = row.try_get("update_id").map_err(read_err)?;
                    let payload: Option<String> = row.try_get("payload").map_err(read_err)?;
                    let payload = payload.ok_or_else(|| {
                        corrupt("unanswered update without payload", &update_id.to_string())
                    })?;
                    let sent: Option<String> = row.try_get("sent").map_err(read_err)?;
                    let sent = super::inbox::parse_sent(sent.as_deref());
                    Ok(Some(InboundUpdate {
                        platform: platform.to_string(),
                        update_id,
                        chat_key: row.try_get("chat_key").map_err(read_err)?,
                        payload,
                        sent,
                    }))
                }))
            }

            fn forget_chat_updates<'a>(
                &'a self,
                platform: &'a str,
                chat: &'a str,
                dry_run: bool,
            ) -> StoreFuture<'a, u64> {
                Box::pin(self.timed(async move {
                    if dry_run {
                        let n: i64 = sqlx::query_scalar(sql!("count_chat_updates"))
                            .bind(platform)
                            .bind(chat)
                            .fetch_one(&self.pool)
                            .await
                            .map_err(read_err)?;
                        return Ok(u64::try_from(n).unwrap_or(0));
                    }
                    let done = sqlx::query(sql!("delete_chat_updates"))
                        .bind(platform)
                        .bind(chat)
                        .execute(&self.pool)
                        .await
                        .map_err(read_err)?;
                    Ok(done.rows_affected())
                }))
            }

            fn note_sent<'a>(
                &'a self,
                platform: &'a str,
                update_id: i64,
                sent: &'a [i64],
            ) -> StoreFuture<'a, ()> {
                Box::pin(self.timed(async move {
                    sqlx::query(sql!("note_sent"))
                        .bind(platform)
                        .bind(update_id)
                        .bind(super::inbox::sent_column(sent))
                        .execute(&self.pool)
                        .await
                        .map_err(read_err)?;
                    Ok(())
                }))
            }

            fn finish_update<'a>(
                &'a self,
                platform: &'a str,
                update_id: i64,
            ) -> StoreFuture<'a, ()> {
                Box::pin(self.timed(async move {
                    sqlx::query(sql!("finish_update"))
                        .bind(platform)
                        .bind(update_id)
                        .bind(db_time(chrono::Utc::now()))
                        .execute(&self.pool)
                        .await
                        .map_err(read_err)?;
                    Ok(())
                }))
            }

            fn lease_chat<'a>(
                &'a self,
                platform: &'a str,
                chat: &'a str,
                replica: &'a str,
                until: chrono::DateTime<chrono::Utc>,
            ) -> StoreFuture<'a, bool> {
                Box::pin(self.timed(async move {
                    let done = sqlx::query(sql!("lease_chat"))
                        .bind(platform)
                        .bind(chat)
                        .bind(replica)
                        .bind(db_time(until))
                        .bind(db_time(chrono::Utc::now()))
                        .execute(&self.pool)
                        .await
                        .map_err(read_err)?;
                    Ok(done.rows_affected() == 1)
                }))
            }

            fn release_chat<'a>(
                &'a self,
                platform: &'a str,
                chat: &'a str,
                replica: &'a str,
            ) -> StoreFuture<'a, ()> {
                Box::pin(self.timed(async move {
                    sqlx::query(sql!("release_chat"))
                        .bind(platform)
                        .bind(chat)
                        .bind(replica)
                        .execute(&self.pool)
                        .await
                        .map_err(read_err)?;
                    Ok(())
                }))
            }

            fn waiting_chats<'a>(
                &'a self,
                platform: &'a str,
                replica: &'a str,
                limit: u32,
            ) -> StoreFuture<'a, Vec<String>> {
                Box::pin(self.timed(async move {
                    sqlx::query_scalar(sql!("waiting_chats"))
                        .bind(platform)
                        .bind(db_time(chrono::Utc::now()))
                        .bind(replica)
                        .bind(i64::from(limit))
                        .fetch_all(&self.pool)
                        .await
                        .map_err(read_err)
                }))
            }

            fn open_conversation<'a>(
                &'a self,
                platform: &'a str,
                channel: &'a str,
            ) -> StoreFuture<'a, Option<StoredConversation>> {
                Box::pin(async move {
                    let id: Option<String> = self
                        .timed(async {
                            sqlx::query_scalar(sql!("select_open_conversation"))
                                .bind(platform)
                                .bind(channel)
                                .fetch_optional(&self.pool)
                                .await
                                .map_err(read_err)
                        })
                        .await?;
                    match id {
                        Some(id) => self.conversation(&id).await,
                        None => Ok(None),
                    }
                })
            }

            fn purge_updates(&self, before: chrono::DateTime<chrono::Utc>) -> StoreFuture<'_, u64> {
                Box::pin(self.timed(async move {
                    let done = sqlx::query(sql!("purge_updates"))
                        .bind(db_time(before))
                        .execute(&self.pool)
                        .await
                        .map_err(read_err)?;
                    Ok(done.rows_affected())
                }))
            }

            fn stats(&self) -> StoreFuture<'_, Stats> {
                Box::pin(self.timed(async move {
                    let p = &self.pool;
                    Ok(Stats::merge(StatsParts {
                        conversations: stats_rows(
                            p,
                            sql!("stats_conversations"),
                            &["conversations", "handoffs"],
                        )
                        .await?,
                        messages: stats_rows(
                            p,
                            sql!("stats_messages"),
                            &[
                                "messages",
                                "user_messages",
                                "assistant_messages",
                                "flagged",
                                "latency_sum",
                                "latency_count",
                                "generated",
                                "extracted",
                                "abstained",
                                "operator_messages",
                                "reviewed",
                                "corrected",
                            ],
                        )
                        .await?,
                        feedback: stats_rows(
                            p,
                            sql!("stats_feedback"),
                            &["feedback", "rating_sum", "positive"],
                        )
                        .await?,
                        moderation: stats_rows(p, sql!("stats_moderation"), &["events", "actions"])
                            .await?,
                    }))
                }))
            }

            fn close(&self) -> StoreFuture<'_, ()> {
                Box::pin(async move {
                    self.pool.close().await;
                    Ok(())
                })
            }
        }
    };
}

pub(crate) use sql_store;
