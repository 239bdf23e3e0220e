//! The summary's own figures: vouchers and the origin's use while waiting.

use super::*;
use crate::stats::Outcome;

fn sample(queue: Option<f64>, in_flight: Option<f64>, issued: u64) -> Sample {
    Sample {
        queue_length: queue,
        origin_in_flight: in_flight,
        vouchers_issued: issued,
        ..Sample::default()
    }
}

#[test]
fn busy_share_counts_seconds_with_a_line_and_stock_left() {
    let samples = [
        // No line yet: not counted.
        sample(Some(0.0), Some(2.0), 0),
        sample(Some(10.0), Some(4.0), 0),
        sample(Some(10.0), Some(8.0), 5),
        // Over capacity counts as full.
        sample(Some(3.0), Some(12.0), 9),
        // No theater reading: skipped, not taken as idle.
        sample(Some(3.0), None, 9),
        // Stock gone (10 of 10): not counted.
        sample(Some(50.0), Some(0.0), 10),
    ];
    let share = busy_share_while_waiting(&samples, 8, Some(10)).unwrap();
    assert!((share - (0.5 + 1.0 + 1.0) / 3.0).abs() < 1e-9, "{share}");
    // Without a voucher step the stock does not matter.
    let share = busy_share_while_waiting(&samples, 8, None).unwrap();
    assert!(
        (share - (0.5 + 1.0 + 1.0 + 0.0) / 4.0).abs() < 1e-9,
        "{share}"
    );
    // No line ever (or no usher): no figure.
    let none = [sample(None, Some(8.0), 0), sample(Some(0.0), Some(8.0), 0)];
    assert_eq!(busy_share_while_waiting(&none, 8, Some(10)), None);
    assert_eq!(busy_share_while_waiting(&[], 8, None), None);
}

fn holder(id: u32, code: Option<&str>, at: Option<f64>) -> Record {
    Record {
        id,
        arrival: 0.0,
        entry: 0.0,
        admitted_at: Some(1.0),
        ticket: None,
        continuous: true,
        outcome: Outcome::Voucher,
        visits: 1,
        errors: 0,
        voucher: code.map(Into::into),
        voucher_at: at,
        first_eta: None,
        left_after: None,
    }
}

#[test]
fn vouchers_are_counted_once_with_the_last_time() {
    let r = [
        holder(0, Some("A"), Some(30.0)),
        holder(1, Some("B"), Some(95.5)),
        holder(2, Some("A"), Some(40.0)),
        holder(3, None, None),
    ];
    let v = vouchers(&r, 20);
    assert_eq!((v.stock, v.issued, v.unique, v.duplicates), (20, 3, 2, 1));
    assert_eq!(v.last_issued_seconds, Some(95.5));
    assert_eq!(vouchers(&r[3..], 20).last_issued_seconds, None);
}
