"""certgraph GraphQL resolvers."""
