//! Delta encoding must not drift.
//!
//! The prototype's sender quantized `x_t - x_{t-1}` (the exact previous activation) while its
//! receiver added the dequantized difference to its own reconstruction. Each step's rounding
//! error then stays in the receiver forever and the errors add up like a random walk, growing
//! with the square root of the step count. `DeltaEncoder` quantizes `x_t - r_{t-1}`, where
//! `r` is the receiver's reconstruction it mirrors, so the previous error is part of the next
//! difference and gets corrected: the error stays below half a quantization step.

use synapse::protocol::*;

/// splitmix64: a small deterministic generator so the test needs no crate and never flakes.
struct Rng(u64);

impl Rng {
    fn next_f32(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0 // [-1, 1)
    }
}

const COLS: usize = 64;
const STEPS: usize = 500;
/// Largest change of one value per step: a slowly varying signal of magnitude ~1.
const STEP: f32 = 0.02;

fn max_err(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The prototype's mistake, for comparison: the sender's reference is the exact previous value.
fn naive_step(prev_exact: &[f32], x: &[f32], receiver: &mut [f32]) {
    let diff: Vec<f32> = x.iter().zip(prev_exact).map(|(a, b)| a - b).collect();
    let mut q = Vec::new();
    let scale = quantize_into(&diff, INT8_MAX_Q, 0, &mut q).expect("finite");
    for (r, &v) in receiver.iter_mut().zip(&q) {
        *r = delta_reconstruct(*r, v, scale);
    }
}

#[test]
fn tracking_encoder_error_stays_bounded_while_naive_drifts() {
    let mut rng = Rng(42);
    let mut x: Vec<f32> = (0..COLS).map(|_| rng.next_f32()).collect();
    let limits = Limits::default();
    // No periodic keyframes: only the first frame is one, exact (f32) so that every later
    // error comes from the deltas alone.
    let mut enc = DeltaEncoder::new(0).with_keyframe_encoding(Encoding::F32);
    let mut dec = DeltaDecoder::new();
    let first = Activation::new(1, COLS as u32, x.clone()).expect("shape");
    let kf = enc.encode(&first, 1, 1).expect("keyframe");
    let mut naive_receiver = dec.decode(&kf, &limits).expect("keyframe").data;
    let (mut tracked, mut naive) = (Vec::new(), Vec::new());
    for step in 1..STEPS {
        let prev = x.clone();
        x.iter_mut().for_each(|v| *v += STEP * rng.next_f32());
        let act = Activation::new(1, COLS as u32, x.clone()).expect("shape");
        let frame = enc
            .encode(&act, seq_pos_for(step as u64 + 1), 1)
            .expect("encode");
        assert!(frame.flags.delta, "step {step} should be a delta");
        let got = dec.decode(&frame, &limits).expect("decode").data;
        assert_eq!(
            Some(got.as_slice()),
            enc.reference(),
            "sender mirrors receiver exactly"
        );
        tracked.push(max_err(&x, &got));
        naive_step(&prev, &x, &mut naive_receiver);
        naive.push(max_err(&x, &naive_receiver));
    }
    let worst = |v: &[f32]| v.iter().copied().fold(0.0, f32::max);
    let (early, late) = (
        worst(&tracked[..100]),
        worst(&tracked[tracked.len() - 100..]),
    );
    // Half a step of the largest possible difference (STEP plus the carried error), plus
    // f32 rounding of values of magnitude ~1.
    let bound = (STEP * 1.01) / (2.0 * 127.0) + 1e-6;
    assert!(
        worst(&tracked) <= bound,
        "tracking error {} above {bound}",
        worst(&tracked)
    );
    assert!(
        late <= 2.0 * early,
        "tracking error grew: {early} -> {late}"
    );
    let naive_late = worst(&naive[naive.len() - 100..]);
    let naive_early = worst(&naive[..100]);
    eprintln!(
        "max error, steps 1-100 / 400-500: tracking {early:.2e} / {late:.2e}, naive {naive_early:.2e} / {naive_late:.2e}"
    );
    assert!(
        naive_late > 1.5 * naive_early,
        "naive should drift: {naive_early} -> {naive_late}"
    );
    assert!(
        naive_late > 5.0 * late,
        "naive {naive_late} vs tracking {late}"
    );
}

#[test]
fn keyframes_every_n_frames_keep_both_ends_in_step() {
    let mut rng = Rng(7);
    let mut x: Vec<f32> = (0..COLS).map(|_| rng.next_f32()).collect();
    let limits = Limits::default();
    let mut enc = DeltaEncoder::new(16).with_compression(true);
    let mut dec = DeltaDecoder::new();
    let mut keyframes = 0;
    for step in 0..100u64 {
        x.iter_mut().for_each(|v| *v += STEP * rng.next_f32());
        let act = Activation::new(1, COLS as u32, x.clone()).expect("shape");
        let bytes = encode(&enc.encode(&act, seq_pos_for(step + 1), 9).expect("encode"));
        let frame = decode(&bytes, &limits).expect("valid frame");
        keyframes += usize::from(!frame.flags.delta);
        let got = dec.decode(&frame, &limits).expect("decode").data;
        assert_eq!(Some(got.as_slice()), enc.reference());
        // Keyframes are int8 too: half a step of the largest value.
        let largest = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(max_err(&x, &got) <= largest / 254.0 + 1e-6);
    }
    assert_eq!(keyframes, 100usize.div_ceil(16));
}

#[test]
fn prefill_keyframe_then_deltas_continue_from_its_last_row() {
    let limits = Limits::default();
    let mut enc = DeltaEncoder::new(0);
    let mut dec = DeltaDecoder::new();
    let prefill = Activation::new(3, 4, (0..12).map(|i| i as f32 * 0.25).collect()).expect("shape");
    let kf = enc.encode(&prefill, 3, 1).expect("prefill");
    assert!(!kf.flags.delta && kf.dim0 == 3);
    dec.decode(&kf, &limits).expect("prefill");
    assert_eq!(dec.reference(), enc.reference());
    let last = dec.reference().expect("reference is the last row");
    assert!(max_err(last, &prefill.data[8..]) <= 2.75 / 254.0 + 1e-6);
    let step = Activation::new(1, 4, vec![2.0, 2.25, 2.5, 3.0]).expect("shape");
    let f = enc.encode(&step, 4, 1).expect("delta");
    assert!(f.flags.delta);
    let got = dec.decode(&f, &limits).expect("delta").data;
    assert!(max_err(&got, &step.data) <= 1.0 / 254.0 + 1e-6);
}
