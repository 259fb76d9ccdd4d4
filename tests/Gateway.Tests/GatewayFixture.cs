namespace OrleansPush.Gateway.Tests;

/// <summary>One embedded gateway shared by a collection; each test uses topics of its own.</summary>
public sealed class GatewayFixture : IAsyncLifetime
{
    public TestGateway Gateway { get; private set; } = null!;

    public async Task InitializeAsync() => Gateway = await TestGateway.StartEmbeddedAsync(new Dictionary<string, string?>
    {
        ["OrleansPush:Topics:Namespaces:tiny:HistorySize"] = "3",
        ["OrleansPush:Topics:Namespaces:prop:HistorySize"] = "5000",
        ["OrleansPush:Topics:Namespaces:room:Presence"] = "true",
    });

    public async Task DisposeAsync() => await Gateway.DisposeAsync();

    public static string NewTopic(string prefix = "t") => $"{prefix}-{Guid.NewGuid():N}";
}

[CollectionDefinition(Name)]
public sealed class GatewayCollection : ICollectionFixture<GatewayFixture>
{
    public const string Name = "embedded gateway";
}
