//! Topological order, and the path of a cycle when there is one. Both are
//! iterative: a 100,000-node chain needs no deep stack.

use petgraph::algo::toposort;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::Direction;

/// Node weights in a topological order, or the nodes of one cycle in order.
pub(super) fn topological_order(dag: &DiGraph<usize, ()>) -> Result<Vec<usize>, Vec<usize>> {
    match toposort(dag, None) {
        Ok(order) => Ok(order.into_iter().map(|i| dag[i]).collect()),
        Err(cycle) => Err(find_cycle(dag, cycle.node_id()).into_iter().map(|i| dag[i]).collect()),
    }
}

/// Walks a cycle through `start` (a node on or leading into a cycle): follows
/// edges staying inside the strongly connected component until a node repeats.
fn find_cycle(dag: &DiGraph<usize, ()>, start: NodeIndex) -> Vec<NodeIndex> {
    let sccs = petgraph::algo::kosaraju_scc(dag);
    let Some(component) = sccs.iter().find(|c| c.len() > 1 || c.iter().any(|&n| dag.contains_edge(n, n))).cloned()
    else {
        return vec![start];
    };
    let inside: std::collections::HashSet<NodeIndex> = component.iter().copied().collect();
    let mut path = vec![component[0]];
    let mut position = std::collections::HashMap::from([(component[0], 0usize)]);
    loop {
        let current = *path.last().expect("path starts non-empty");
        let next = dag
            .neighbors_directed(current, Direction::Outgoing)
            .find(|n| inside.contains(n))
            .expect("every node of a strongly connected component has a successor inside it");
        if let Some(&at) = position.get(&next) {
            let mut cycle = path.split_off(at);
            // Start the reported cycle at its earliest-declared node.
            let min = (0..cycle.len()).min_by_key(|&i| dag[cycle[i]]).unwrap_or(0);
            cycle.rotate_left(min);
            return cycle;
        }
        position.insert(next, path.len());
        path.push(next);
    }
}
