//! A small builder over the generated ONNX protobuf types: named values,
//! nodes with attributes, initializers and typed graph inputs/outputs. It
//! keeps node and value names unique so graphs read well in Netron.

use super::onnx::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto, attribute_proto::AttributeType,
    tensor_proto::DataType, tensor_shape_proto, type_proto,
};

/// ONNX IR version written (IR 8 = ONNX 1.10+, enough for opset 17).
const IR_VERSION: i64 = 8;

/// A dimension of a graph input or output.
#[derive(Debug, Clone)]
pub enum Dim {
    Fixed(i64),
    /// A dynamic axis, named so runtimes can tell which axes agree.
    Named(String),
}

impl From<usize> for Dim {
    fn from(v: usize) -> Self {
        Dim::Fixed(v as i64)
    }
}

impl From<&str> for Dim {
    fn from(v: &str) -> Self {
        Dim::Named(v.to_string())
    }
}

/// Element types chatforge graphs use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elem {
    F32,
    I64,
    I8,
    Bool,
}

impl Elem {
    fn code(self) -> i32 {
        match self {
            Elem::F32 => DataType::Float as i32,
            Elem::I64 => DataType::Int64 as i32,
            Elem::I8 => DataType::Int8 as i32,
            Elem::Bool => DataType::Bool as i32,
        }
    }
}

/// An attribute of a node.
pub enum Attr {
    Int(&'static str, i64),
    Ints(&'static str, Vec<i64>),
    Float(&'static str, f32),
}

impl Attr {
    fn proto(self) -> AttributeProto {
        let mut a = AttributeProto::default();
        match self {
            Attr::Int(n, v) => {
                a.name = Some(n.into());
                a.r#type = Some(AttributeType::Int as i32);
                a.i = Some(v);
            }
            Attr::Ints(n, v) => {
                a.name = Some(n.into());
                a.r#type = Some(AttributeType::Ints as i32);
                a.ints = v;
            }
            Attr::Float(n, v) => {
                a.name = Some(n.into());
                a.r#type = Some(AttributeType::Float as i32);
                a.f = Some(v);
            }
        }
        a
    }
}

/// A tensor with raw little-endian data, as initializers and constants use.
pub fn tensor_f32(name: &str, dims: &[usize], data: &[f32]) -> TensorProto {
    let raw: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    raw_tensor(name, dims, Elem::F32, raw)
}

pub fn tensor_i64(name: &str, dims: &[usize], data: &[i64]) -> TensorProto {
    let raw: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    raw_tensor(name, dims, Elem::I64, raw)
}

pub fn tensor_i8(name: &str, dims: &[usize], data: &[i8]) -> TensorProto {
    let raw: Vec<u8> = data.iter().map(|&v| v as u8).collect();
    raw_tensor(name, dims, Elem::I8, raw)
}

fn raw_tensor(name: &str, dims: &[usize], elem: Elem, raw: Vec<u8>) -> TensorProto {
    TensorProto {
        name: Some(name.to_string()),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: Some(elem.code()),
        raw_data: Some(raw),
        ..Default::default()
    }
}

fn value_info(name: &str, elem: Elem, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| tensor_shape_proto::Dimension {
            value: Some(match d {
                Dim::Fixed(v) => tensor_shape_proto::dimension::Value::DimValue(*v),
                Dim::Named(s) => tensor_shape_proto::dimension::Value::DimParam(s.clone()),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(elem.code()),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Accumulates a graph.
#[derive(Default)]
pub struct GraphBuilder {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    counter: usize,
}

impl GraphBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    fn fresh(&mut self, hint: &str) -> String {
        self.counter += 1;
        format!("/{hint}_{}", self.counter)
    }

    pub fn input(&mut self, name: &str, elem: Elem, dims: &[Dim]) -> String {
        self.inputs.push(value_info(name, elem, dims));
        name.to_string()
    }

    /// Declares `value` (already produced by a node) a graph output.
    pub fn output(&mut self, value: &str, elem: Elem, dims: &[Dim]) {
        self.outputs.push(value_info(value, elem, dims));
    }

    pub fn initializer(&mut self, t: TensorProto) -> String {
        let name = t.name.clone().unwrap_or_default();
        self.initializers.push(t);
        name
    }

    pub fn const_i64(&mut self, hint: &str, dims: &[usize], data: &[i64]) -> String {
        let name = self.fresh(hint);
        self.initializer(tensor_i64(&name, dims, data))
    }

    pub fn const_f32(&mut self, hint: &str, dims: &[usize], data: &[f32]) -> String {
        let name = self.fresh(hint);
        self.initializer(tensor_f32(&name, dims, data))
    }

    /// A node with one output, named freshly.
    pub fn op(&mut self, op: &str, inputs: &[&str], attrs: Vec<Attr>) -> String {
        let out = self.fresh(op);
        self.op_into(op, inputs, &[&out], attrs);
        out
    }

    /// A node with `n` outputs, named freshly.
    pub fn op_n(&mut self, op: &str, inputs: &[&str], n: usize, attrs: Vec<Attr>) -> Vec<String> {
        let outs: Vec<String> = (0..n).map(|_| self.fresh(op)).collect();
        let refs: Vec<&str> = outs.iter().map(String::as_str).collect();
        self.op_into(op, inputs, &refs, attrs);
        outs
    }

    /// A node writing to the given output names (graph outputs such as
    /// `logits` or `present.0.key`).
    pub fn op_into(&mut self, op: &str, inputs: &[&str], outputs: &[&str], attrs: Vec<Attr>) {
        let name = self.fresh(&format!("{op}_node"));
        self.nodes.push(NodeProto {
            name: Some(name),
            op_type: Some(op.to_string()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            attribute: attrs.into_iter().map(Attr::proto).collect(),
            ..Default::default()
        });
    }

    pub fn finish(self, name: &str) -> GraphProto {
        GraphProto {
            name: Some(name.to_string()),
            node: self.nodes,
            initializer: self.initializers,
            input: self.inputs,
            output: self.outputs,
            ..Default::default()
        }
    }
}

/// Wraps a graph into a model importing the default domain at `opset`.
pub fn model(graph: GraphProto, opset: i64, producer_version: &str) -> ModelProto {
    ModelProto {
        ir_version: Some(IR_VERSION),
        producer_name: Some("chatforge".into()),
        producer_version: Some(producer_version.into()),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(opset),
        }],
        graph: Some(graph),
        ..Default::default()
    }
}
