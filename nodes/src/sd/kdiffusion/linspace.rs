//! `torch.linspace` on the CPU, value for value: the first half counts up
//! from `start`, the second half down from `end`, in the output dtype.

/// `torch.linspace(start, end, n, dtype=float64)`.
pub(super) fn torch_linspace_f64(start: f64, end: f64, n: usize) -> Vec<f64> {
    if n <= 1 {
        return vec![start; n];
    }
    let step = (end - start) / (n - 1) as f64;
    (0..n).map(|i| if i < n / 2 { start + step * i as f64 } else { end - step * (n - 1 - i) as f64 }).collect()
}

/// `torch.linspace(start, end, n)` (float32; the bounds are rounded to
/// float32 first).
pub(super) fn torch_linspace_f32(start: f64, end: f64, n: usize) -> Vec<f32> {
    let (start, end) = (start as f32, end as f32);
    if n <= 1 {
        return vec![start; n];
    }
    let step = (end - start) / (n - 1) as f32;
    (0..n).map(|i| if i < n / 2 { start + step * i as f32 } else { end - step * (n - 1 - i) as f32 }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linspace_hits_both_ends_and_counts_from_the_nearer_one() {
        let v = torch_linspace_f64(0.0, 1.0, 5);
        assert_eq!(v, vec![0.0, 0.25, 0.5, 0.75, 1.0]);
        let v = torch_linspace_f32(999.0, 0.0, 4);
        assert_eq!(v, vec![999.0, 666.0, 333.0, 0.0]);
        assert_eq!(torch_linspace_f32(3.0, 7.0, 1), vec![3.0]);
        assert!(torch_linspace_f64(0.0, 1.0, 0).is_empty());
    }
}
