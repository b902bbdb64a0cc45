//! The render and dispatch queues on SQS, and their dead-letter queues.

pub use crate::ports::dead_letters::DeadLetter;
use crate::ports::queue::{Message, QueueName};
use crate::ports::{DeadLetters, Queue, QueueError};
use async_trait::async_trait;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{
    BatchResultErrorEntry, ChangeMessageVisibilityBatchRequestEntry,
    DeleteMessageBatchRequestEntry, MessageAttributeValue, MessageSystemAttributeName,
    SendMessageBatchRequestEntry,
};
use aws_sdk_sqs::Client;
use serde_json::Value;
use std::time::Duration;

/// SQS takes at most ten messages a batch call.
pub const BATCH_LIMIT: usize = 10;
/// SQS takes at most 256 KiB in one batch call (and one message).
pub const BATCH_BYTES: usize = 256 * 1024;
/// The longest delay a message can be sent with.
pub const MAX_DELAY: Duration = Duration::from_secs(15 * 60);
/// The longest a received message can be hidden: SQS's 12 hours, counted from its receipt,
/// less a margin for the time already spent on it. A retry due later is seen again early
/// and put back (see `relay_lambda`'s dispatch handler).
pub const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 3600 - 10 * 60);
/// How much of a reason a dead letter's attribute carries.
const REASON_CHARS: usize = 1000;
/// A message received this often is sent again as a fresh copy when it has to wait once
/// more, so long waits (an open circuit, a timer, late retries) never reach the queue's
/// dead-letter limit (`maxReceiveCount`, 30 in template.yaml).
pub const REFRESH_AFTER_RECEIVES: u32 = 10;

/// The queues' URLs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueUrls {
    /// The render queue.
    pub render: String,
    /// The dispatch queue.
    pub dispatch: String,
    /// The render dead-letter queue.
    pub render_dlq: Option<String>,
    /// The dispatch dead-letter queue.
    pub dispatch_dlq: Option<String>,
}

impl DeadLetter {
    /// The body sent to the dead-letter queue: the job with `dead_letter_reason` added, so
    /// the reason shows in the console and the job itself stays readable.
    pub fn to_body(&self) -> String {
        match serde_json::from_str::<Value>(&self.body) {
            Ok(Value::Object(mut job)) => {
                job.insert(
                    "dead_letter_reason".into(),
                    Value::String(self.reason.clone()),
                );
                Value::Object(job).to_string()
            }
            _ => serde_json::json!({"body": self.body, "dead_letter_reason": self.reason})
                .to_string(),
        }
    }
}

/// The queues on SQS.
#[derive(Clone, Debug)]
pub struct SqsQueue {
    client: Client,
    urls: QueueUrls,
}

fn all(n: usize, message: String) -> QueueError {
    QueueError {
        failed: (0..n).collect(),
        message,
    }
}

/// What the batch calls of one operation refused: the positions (in the whole list given)
/// and why, gathered call by call.
#[derive(Default)]
struct Refusals {
    failed: Vec<usize>,
    messages: Vec<String>,
}

impl Refusals {
    /// Takes in one batch call's answer; `Err` refuses the whole `range`.
    fn answer<E: std::error::Error + 'static>(
        &mut self,
        range: std::ops::Range<usize>,
        answer: Result<Vec<BatchResultErrorEntry>, E>,
    ) {
        match answer {
            Ok(refused) => {
                for f in refused {
                    if let Ok(i) = f.id.parse::<usize>() {
                        self.failed.push(i);
                    }
                    self.messages
                        .push(format!("{}: {}", f.code, f.message.unwrap_or_default()));
                }
            }
            Err(e) => {
                self.failed.extend(range);
                self.messages
                    .push(format!("SQS: {}", DisplayErrorContext(&e)));
            }
        }
    }

    /// Takes in a whole operation's refusals, its positions mapped back by `position`.
    fn add(&mut self, result: Result<(), QueueError>, position: impl Fn(usize) -> usize) {
        if let Err(e) = result {
            self.failed.extend(e.failed.into_iter().map(position));
            self.messages.push(e.message);
        }
    }

    fn into_result(mut self) -> Result<(), QueueError> {
        if self.failed.is_empty() {
            return Ok(());
        }
        self.failed.sort_unstable();
        self.failed.dedup();
        self.messages.dedup();
        Err(QueueError {
            failed: self.failed,
            message: self.messages.join("; "),
        })
    }
}

/// Whole seconds of a visibility, rounded up, so a retry is never seen before it is due.
fn visibility_secs(delay: Duration) -> i32 {
    delay.min(MAX_VISIBILITY).as_millis().div_ceil(1000) as i32
}

/// Splits bodies into batch calls: at most ten messages and 256 KiB each.
fn batches(bodies: &[String]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, b) in bodies.iter().enumerate() {
        let full = i - start == BATCH_LIMIT || (i > start && bytes + b.len() > BATCH_BYTES);
        if full {
            out.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes += b.len();
    }
    if start < bodies.len() {
        out.push(start..bodies.len());
    }
    out
}

impl SqsQueue {
    /// Queues at `urls`.
    pub fn new(client: Client, urls: QueueUrls) -> Self {
        Self { client, urls }
    }

    /// The URL of a queue.
    pub fn url(&self, queue: QueueName) -> &str {
        match queue {
            QueueName::Render => &self.urls.render,
            QueueName::Dispatch => &self.urls.dispatch,
        }
    }

    fn dlq_url(&self, queue: QueueName) -> Option<&str> {
        match queue {
            QueueName::Render => self.urls.render_dlq.as_deref(),
            QueueName::Dispatch => self.urls.dispatch_dlq.as_deref(),
        }
    }

    /// Sends `bodies` in batch calls, each visible after `delay_of` its position.
    async fn send_to(
        &self,
        url: &str,
        bodies: &[String],
        delay_of: &(dyn Fn(usize) -> Duration + Sync),
        reasons: Option<&[String]>,
    ) -> Result<(), QueueError> {
        let mut refusals = Refusals::default();
        for range in batches(bodies) {
            let mut entries = Vec::with_capacity(range.len());
            for i in range.clone() {
                let delay_secs = delay_of(i).min(MAX_DELAY).as_secs() as i32;
                let mut e = SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(&bodies[i])
                    .delay_seconds(delay_secs);
                if let Some(reason) = reasons.and_then(|r| r.get(i)) {
                    let attr = MessageAttributeValue::builder()
                        .data_type("String")
                        .string_value(reason.chars().take(REASON_CHARS).collect::<String>())
                        .build()
                        .map_err(|e| all(bodies.len(), e.to_string()))?;
                    e = e.message_attributes("reason", attr);
                }
                entries.push(e.build().map_err(|e| all(bodies.len(), e.to_string()))?);
            }
            let answer = self
                .client
                .send_message_batch()
                .queue_url(url)
                .set_entries(Some(entries))
                .send()
                .await
                .map(|out| out.failed);
            refusals.answer(range, answer);
        }
        refusals.into_result()
    }

    /// Hides received messages for their delays, ten to a ChangeMessageVisibilityBatch call.
    async fn change_visibility(
        &self,
        url: &str,
        retries: &[(String, Duration)],
    ) -> Result<(), QueueError> {
        let mut refusals = Refusals::default();
        for (c, chunk) in retries.chunks(BATCH_LIMIT).enumerate() {
            let base = c * BATCH_LIMIT;
            let mut entries = Vec::with_capacity(chunk.len());
            for (i, (handle, delay)) in chunk.iter().enumerate() {
                entries.push(
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id((base + i).to_string())
                        .receipt_handle(handle)
                        .visibility_timeout(visibility_secs(*delay))
                        .build()
                        .map_err(|e| all(retries.len(), e.to_string()))?,
                );
            }
            let answer = self
                .client
                .change_message_visibility_batch()
                .queue_url(url)
                .set_entries(Some(entries))
                .send()
                .await
                .map(|out| out.failed);
            refusals.answer(base..base + chunk.len(), answer);
        }
        refusals.into_result()
    }

    /// Sends dead letters to a queue's dead-letter queue, each with its reason (in the body's
    /// `dead_letter_reason` and in the `reason` message attribute).
    pub async fn dead_letter(
        &self,
        queue: QueueName,
        letters: &[DeadLetter],
    ) -> Result<(), QueueError> {
        if letters.is_empty() {
            return Ok(());
        }
        let Some(url) = self.dlq_url(queue) else {
            return Err(all(
                letters.len(),
                format!(
                    "no dead-letter queue is configured for the {} queue",
                    queue.as_str()
                ),
            ));
        };
        let bodies: Vec<String> = letters.iter().map(DeadLetter::to_body).collect();
        let reasons: Vec<String> = letters.iter().map(|l| l.reason.clone()).collect();
        self.send_to(url, &bodies, &|_| Duration::ZERO, Some(&reasons))
            .await
    }
}

#[async_trait]
impl DeadLetters for SqsQueue {
    async fn dead_letter(
        &self,
        queue: QueueName,
        letters: &[DeadLetter],
    ) -> Result<(), QueueError> {
        SqsQueue::dead_letter(self, queue, letters).await
    }
}

#[async_trait]
impl Queue for SqsQueue {
    async fn depth(
        &self,
        queue: QueueName,
        _now_ms: i64,
    ) -> Result<crate::ports::queue::QueueDepth, QueueError> {
        self.approximate_depth(queue).await
    }

    async fn send(
        &self,
        queue: QueueName,
        bodies: Vec<String>,
        delay: Duration,
    ) -> Result<(), QueueError> {
        self.send_to(self.url(queue), &bodies, &|_| delay, None)
            .await
    }

    async fn receive(
        &self,
        queue: QueueName,
        max: usize,
        visibility: Duration,
    ) -> Result<Vec<Message>, QueueError> {
        let mut out = Vec::new();
        while out.len() < max {
            let want = (max - out.len()).min(BATCH_LIMIT) as i32;
            let got = self
                .client
                .receive_message()
                .queue_url(self.url(queue))
                .max_number_of_messages(want)
                .visibility_timeout(visibility.min(MAX_VISIBILITY).as_secs() as i32)
                .wait_time_seconds(0)
                .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
                .send()
                .await
                .map_err(|e| all(0, format!("SQS: {}", DisplayErrorContext(&e))))?;
            let messages = got.messages.unwrap_or_default();
            if messages.is_empty() {
                break;
            }
            for m in messages {
                let receive_count = m
                    .attributes
                    .as_ref()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1);
                if let (Some(handle), Some(body)) = (m.receipt_handle, m.body) {
                    out.push(Message {
                        handle,
                        body,
                        receive_count,
                    });
                }
            }
        }
        Ok(out)
    }

    async fn ack(&self, queue: QueueName, handles: &[String]) -> Result<(), QueueError> {
        let mut refusals = Refusals::default();
        for (c, chunk) in handles.chunks(BATCH_LIMIT).enumerate() {
            let base = c * BATCH_LIMIT;
            let mut entries = Vec::with_capacity(chunk.len());
            for (i, h) in chunk.iter().enumerate() {
                entries.push(
                    DeleteMessageBatchRequestEntry::builder()
                        .id((base + i).to_string())
                        .receipt_handle(h)
                        .build()
                        .map_err(|e| all(handles.len(), e.to_string()))?,
                );
            }
            let answer = self
                .client
                .delete_message_batch()
                .queue_url(self.url(queue))
                .set_entries(Some(entries))
                .send()
                .await
                .map(|out| out.failed);
            refusals.answer(base..base + chunk.len(), answer);
        }
        refusals.into_result()
    }

    /// In batch calls: fresh copies of the messages received `REFRESH_AFTER_RECEIVES` times
    /// or more (their receive counts start again), the others hidden again.
    async fn requeue_many(
        &self,
        queue: QueueName,
        items: &[(Message, Duration)],
    ) -> Result<(), QueueError> {
        let url = self.url(queue);
        let (fresh, mut hide): (Vec<usize>, Vec<usize>) =
            (0..items.len()).partition(|&i| items[i].0.receive_count >= REFRESH_AFTER_RECEIVES);
        let mut refusals = Refusals::default();
        if !fresh.is_empty() {
            // The copies are sent before the originals are deleted: a failure in between
            // leaves two copies, which the dispatcher tells apart (never two sends), never
            // none. An original whose copy was refused is hidden again instead.
            let bodies: Vec<String> = fresh.iter().map(|&i| items[i].0.body.clone()).collect();
            let unsent = match self
                .send_to(url, &bodies, &|j| items[fresh[j]].1, None)
                .await
            {
                Ok(()) => Vec::new(),
                Err(e) => e.failed,
            };
            let (copied, refused): (Vec<usize>, Vec<usize>) =
                (0..fresh.len()).partition(|j| !unsent.contains(j));
            hide.extend(refused.iter().map(|&j| fresh[j]));
            hide.sort_unstable();
            let handles: Vec<String> = copied
                .iter()
                .map(|&j| items[fresh[j]].0.handle.clone())
                .collect();
            let deleted = self.ack(queue, &handles).await;
            refusals.add(deleted, |k| fresh[copied[k]]);
        }
        let retries: Vec<(String, Duration)> = hide
            .iter()
            .map(|&i| (items[i].0.handle.clone(), items[i].1))
            .collect();
        let hidden = self.change_visibility(url, &retries).await;
        refusals.add(hidden, |k| hide[k]);
        refusals.into_result()
    }

    async fn retry_after(
        &self,
        queue: QueueName,
        handle: &str,
        delay: Duration,
    ) -> Result<(), QueueError> {
        self.client
            .change_message_visibility()
            .queue_url(self.url(queue))
            .receipt_handle(handle)
            .visibility_timeout(visibility_secs(delay))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| all(1, format!("SQS: {}", DisplayErrorContext(&e))))
    }

    async fn retry_after_many(
        &self,
        queue: QueueName,
        retries: &[(String, Duration)],
    ) -> Result<(), QueueError> {
        self.change_visibility(self.url(queue), retries).await
    }
}

/// Queue depths for `GET /v1/status`.
impl SqsQueue {
    /// SQS's approximate count of the queue's messages (visible, delayed and in flight); the
    /// age of the oldest due one is not something SQS tells per queue at this cost.
    async fn approximate_depth(
        &self,
        queue: QueueName,
    ) -> Result<crate::ports::queue::QueueDepth, QueueError> {
        use aws_sdk_sqs::types::QueueAttributeName as A;
        let kinds = [
            A::ApproximateNumberOfMessages,
            A::ApproximateNumberOfMessagesDelayed,
            A::ApproximateNumberOfMessagesNotVisible,
        ];
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(self.url(queue))
            .set_attribute_names(Some(kinds.to_vec()))
            .send()
            .await
            .map_err(|e| all(0, DisplayErrorContext(&e).to_string()))?;
        let attrs = out.attributes();
        let messages = kinds
            .iter()
            .filter_map(|k| attrs.and_then(|a| a.get(k)))
            .filter_map(|v| v.parse::<u64>().ok())
            .sum();
        Ok(crate::ports::queue::QueueDepth {
            messages: Some(messages),
            oldest_due_age_ms: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_hold_ten_messages_and_256_kib() {
        let small: Vec<String> = (0..23).map(|i| i.to_string()).collect();
        assert_eq!(batches(&small), vec![0..10, 10..20, 20..23]);
        let big = "x".repeat(100 * 1024);
        let bodies = vec![big.clone(), big.clone(), big.clone(), "y".into()];
        assert_eq!(batches(&bodies), vec![0..2, 2..4]);
        assert!(batches(&[]).is_empty());
    }

    #[test]
    fn a_dead_letter_carries_its_reason_and_its_job() {
        let l = DeadLetter {
            body: r#"{"delivery":"dlv_1"}"#.into(),
            reason: "the target answered 422".into(),
        };
        let v: Value = serde_json::from_str(&l.to_body()).unwrap();
        assert_eq!(v["delivery"], "dlv_1");
        assert_eq!(v["dead_letter_reason"], "the target answered 422");
        let poison = DeadLetter {
            body: "not json".into(),
            reason: "unreadable".into(),
        };
        let v: Value = serde_json::from_str(&poison.to_body()).unwrap();
        assert_eq!(v["body"], "not json");
    }
}
