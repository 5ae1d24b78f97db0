//! Tests of `weights::lazy`.

use super::*;

fn t(vals: Vec<f32>, shape: Vec<usize>) -> LazyTensor<'static> {
    LazyTensor::from_data(TensorData::new(vals, shape))
}

fn ck_offset(ck: &LazyCheckpoint) -> u64 {
    match &ck.get("a").unwrap().source {
        Source::File { offset, .. } => *offset,
        _ => panic!("not file-backed"),
    }
}

fn f32s(t: &LazyTensor) -> Vec<f32> {
    t.read().unwrap().try_to_vec::<f32>().unwrap()
}

#[test]
fn rows_halves_and_reshape_are_lazy_byte_ops() {
    let mut ck = LazyCheckpoint::default();
    let names: Vec<String> = ["q", "k", "v"].iter().map(|s| s.to_string()).collect();
    for (i, n) in names.iter().enumerate() {
        let b = i as f32 * 10.0;
        ck.insert(n.clone(), t(vec![b, b + 1.0, b + 2.0, b + 3.0], vec![2, 2]));
    }
    ck.fuse_rows(&names, "qkv".into());
    assert_eq!(ck.len(), 1);
    let fused = ck.get("qkv").unwrap();
    assert_eq!(fused.shape(), &[6, 2]);
    assert_eq!(f32s(fused), vec![0.0, 1.0, 2.0, 3.0, 10.0, 11.0, 12.0, 13.0, 20.0, 21.0, 22.0, 23.0]);
    ck.swap_row_halves("qkv");
    assert_eq!(f32s(ck.get("qkv").unwrap())[..4], [12.0, 13.0, 20.0, 21.0]);
    // parts that do not fit (other trailing dims, a missing one, 0-d) are left alone
    let mut ck = LazyCheckpoint::default();
    ck.insert("q", t(vec![0.0; 4], vec![2, 2]));
    ck.insert("k", t(vec![0.0; 6], vec![2, 3]));
    ck.fuse_rows(&["q".into(), "k".into()], "qk".into());
    ck.fuse_rows(&["q".into(), "x".into()], "qx".into());
    assert_eq!(ck.len(), 2);
    assert!(LazyTensor::concat_rows(vec![t(vec![1.0], vec![]), t(vec![1.0], vec![])]).is_none());
    assert!(t(vec![0.0; 3], vec![3]).swap_row_halves().is_none());
    let r = t(vec![1.0, 2.0, 3.0, 4.0], vec![2, 2, 1, 1]).reshaped(vec![2, 2]).unwrap();
    assert_eq!(r.read().unwrap().shape().to_vec(), vec![2, 2]);
    assert!(t(vec![0.0; 4], vec![4]).reshaped(vec![3]).is_none());
}

#[test]
fn row_blocks_and_transpose() {
    let mut ck = LazyCheckpoint::default();
    ck.insert("w", t((0..12).map(|i| i as f32).collect(), vec![6, 2]));
    let names: Vec<String> = ["q", "k", "v"].iter().map(|s| s.to_string()).collect();
    ck.split_rows("w", &names);
    assert_eq!(ck.len(), 3);
    assert_eq!(f32s(ck.get("k").unwrap()), vec![4.0, 5.0, 6.0, 7.0]);
    ck.split_rows("q", &names); // 2 rows into 3 blocks: left alone
    assert_eq!(ck.get("q").unwrap().shape(), &[2, 2]);
    let tr = t((0..6).map(|i| i as f32).collect(), vec![2, 3]).transposed().unwrap();
    assert_eq!(tr.shape(), &[3, 2]);
    assert_eq!(f32s(&tr), vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    assert!(t(vec![0.0; 2], vec![2]).transposed().is_none());
    assert!(t(vec![0.0; 4], vec![4]).row_block(4, 4).is_none());
}

#[test]
fn bf16_stays_bf16() {
    let data = TensorData::new(vec![half::bf16::from_f32(1.5), half::bf16::from_f32(-2.0)], [2]);
    let mut ck = LazyCheckpoint::from(Checkpoint::from_tensors([("a".to_string(), data)].into()));
    ck.fuse_rows(&["a".into()], "b".into());
    let back = ck.get("b").unwrap().read().unwrap();
    assert_eq!(back.dtype(), DType::BF16);
    assert_eq!(back.try_to_vec::<half::bf16>().unwrap()[1].to_f32(), -2.0);
}

#[test]
fn mapped_tensors_are_the_files_pages_when_aligned() {
    let dir = std::env::temp_dir().join(format!("dt_lazy_map_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("m.safetensors");
    // `b` starts 3 bytes into the data (not 4-aligned), `c` 12 bytes in (aligned)
    let header = r#"{"a":{"dtype":"U8","shape":[3],"data_offsets":[0,3]},"b":{"dtype":"F32","shape":[2],"data_offsets":[3,11]},"pad":{"dtype":"U8","shape":[1],"data_offsets":[11,12]},"c":{"dtype":"F32","shape":[2,2],"data_offsets":[12,28]}}"#;
    let mut head = header.as_bytes().to_vec();
    head.resize(head.len().div_ceil(8) * 8, b' ');
    let mut bytes = (head.len() as u64).to_le_bytes().to_vec();
    bytes.extend(head);
    bytes.extend([7u8, 8, 9]);
    bytes.extend([1.5f32, -2.0].iter().flat_map(|x| x.to_le_bytes()));
    bytes.push(0);
    bytes.extend([1.0f32, 2.0, 3.0, 4.0].iter().flat_map(|x| x.to_le_bytes()));
    std::fs::write(&p, &bytes).unwrap();

    // an ordinary file is read, not mapped, by the safe opener
    assert!(LazyCheckpoint::open(&p).unwrap().get("c").unwrap().mapped().is_none());
    // SAFETY: the test's own file, not modified while mapped.
    let ck = unsafe { LazyCheckpoint::open_mapped(&p) }.unwrap();
    let Source::File { file, .. } = &ck.get("c").unwrap().source else { panic!("not file-backed") };
    let base = file.map.as_ref().unwrap().bytes.as_ptr();
    let c = ck.get("c").unwrap().mapped().unwrap();
    assert_eq!(c.as_bytes().as_ptr(), base.wrapping_add(bytes.len() - 16), "not the file's pages");
    assert_eq!(c.try_to_vec::<f32>().unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
    let row = ck.get("c").unwrap().clone().row_block(1, 2).unwrap().mapped().unwrap();
    assert_eq!(row.try_to_vec::<f32>().unwrap(), vec![3.0, 4.0]);
    // misaligned for f32: not mapped, read as a copy; fix-ups are not mapped either
    assert!(ck.get("b").unwrap().mapped().is_none());
    assert_eq!(f32s(ck.get("b").unwrap()), vec![1.5, -2.0]);
    assert!(ck.get("c").unwrap().clone().transposed().unwrap().mapped().is_none());
    assert_eq!(ck.get("a").unwrap().mapped().unwrap().try_to_vec::<u8>().unwrap(), vec![7, 8, 9]);
    // handing the pages back leaves data that shares them valid
    ck.get("c").unwrap().release();
    assert_eq!(c.try_to_vec::<f32>().unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
    drop(ck);
    assert_eq!(c.try_to_vec::<f32>().unwrap(), vec![1.0, 2.0, 3.0, 4.0], "the data keeps the mapping alive");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn headers_are_checked_against_the_file() {
    let dir = std::env::temp_dir().join(format!("dt_lazy_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, header: &str, data: usize| {
        let p = dir.join(name);
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend(header.as_bytes());
        bytes.extend(vec![0u8; data]);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let ok = write("ok.safetensors", r#"{"__metadata__":{},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, 8);
    let ck = LazyCheckpoint::open(&ok).unwrap();
    assert_eq!(ck.get("a").unwrap().read().unwrap().try_to_vec::<f32>().unwrap(), vec![0.0, 0.0]);
    let block = ck.get("a").unwrap().clone().row_block(1, 2).unwrap();
    assert!(matches!(block.source, Source::File { offset, .. } if offset == ck_offset(&ck) + 4));
    for (name, header, data) in [
        ("short.safetensors", r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, 4),
        ("len.safetensors", r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, 8),
        ("dtype.safetensors", r#"{"a":{"dtype":"F8","shape":[2],"data_offsets":[0,2]}}"#, 8),
        ("order.safetensors", r#"{"a":{"dtype":"U8","shape":[0],"data_offsets":[4,0]}}"#, 8),
        ("huge.safetensors", r#"{"a":{"dtype":"F64","shape":[4611686018427387904,8],"data_offsets":[0,8]}}"#, 8),
        ("json.safetensors", r#"[1,2]"#, 0),
    ] {
        let p = write(name, header, data);
        assert!(matches!(LazyCheckpoint::open(&p), Err(Error::Io { .. })), "{name}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
