//! Unit tests of the job ids (`new_job_id`, `is_job_id`).

use super::{is_job_id, new_job_id};

#[test]
fn a_batch_s_ids_share_their_first_two_characters_and_nothing_else() {
    let mut batch = None;
    let ids: Vec<String> = (0..64).map(|_| new_job_id(&mut batch).unwrap()).collect();
    let prefix = batch.expect("the first id chose the batch's characters");
    for id in &ids {
        assert!(is_job_id(id), "{id}");
        assert_eq!(id.as_bytes()[..2], prefix, "{id}");
    }
    let rest: std::collections::HashSet<&str> = ids.iter().map(|id| &id[2..]).collect();
    assert_eq!(rest.len(), ids.len(), "the random part repeats");
    // Another batch picks its characters anew: 12 random bits, so 8 batches all
    // alike would be a 1 in 2^84 chance.
    let prefixes: std::collections::HashSet<[u8; 2]> = (0..8)
        .map(|_| {
            let mut batch = None;
            new_job_id(&mut batch).unwrap();
            batch.unwrap()
        })
        .collect();
    assert!(prefixes.len() > 1, "{prefixes:?}");
}
