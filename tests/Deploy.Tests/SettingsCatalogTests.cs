using System.Reflection;
using Microsoft.Extensions.Configuration;
using OrleansPush.Gateway.Hosting;
using OrleansPush.Gateway.Security;
using OrleansPush.Grains;
using OrleansPush.Hosting;
using OrleansPush.Silo;
using static OrleansPush.Deploy.Tests.Manifests;

namespace OrleansPush.Deploy.Tests;

/// <summary><c>Hosting/settings.catalog</c>, the list of every key the silo and the gateway read, against the options
/// classes it is generated from.</summary>
public sealed class SettingsCatalogTests
{
    /// <summary>Set to 1 to rewrite <c>Hosting/settings.catalog</c> from the options classes.</summary>
    public const string WriteVariable = "ORLEANSPUSH_WRITE_SETTINGS_CATALOG";

    [Fact]
    public void TheEmbeddedCatalogListsEveryOptionOfTheSiloAndTheGateway()
    {
        var generated = SettingsCatalog.Describe(OptionClasses());
        var file = Path.Combine(Root, "Hosting", "settings.catalog");
        if (Environment.GetEnvironmentVariable(WriteVariable) == "1")
        {
            File.WriteAllLines(file, ["// Generated from the options classes by SettingsCatalogTests (tests/Deploy.Tests); do not edit.", .. generated]);
        }

        var embedded = SettingsCatalog.Default.Patterns;
        var missing = generated.Except(embedded, StringComparer.OrdinalIgnoreCase).ToArray();
        var stale = embedded.Except(generated, StringComparer.OrdinalIgnoreCase).ToArray();
        Assert.True(missing.Length == 0 && stale.Length == 0,
            $"Hosting/settings.catalog is out of date (missing: {string.Join(", ", missing)}; stale: {string.Join(", ", stale)}); " +
            $"run the Deploy tests once with {WriteVariable}=1 and rebuild.");
    }

    [Theory]
    [InlineData("OrleansPush:Topics:Namespaces:chat:HistorySize", true)]
    [InlineData("OrleansPush:topics:namespaces:chat:historysize", true)]
    [InlineData("OrleansPush:AllowedOrigins:0", true)]
    [InlineData("OrleansPush:Cluster:GatewayPorts:1", true)]
    [InlineData("OrleansPush:Cluster:Membership:ProbeTimeout", true)]
    [InlineData("OrleansPush:Storage:Encryption:Keys:k1", true)]
    [InlineData("OrleansPush:Topics:Namespaces:chat:HistroySize", false)]
    [InlineData("OrleansPush:Cluster:GatewayPorts:first", false)]
    [InlineData("OrleansPush:Topics", false)]
    public void KnowsWhatTheOptionsBindAndNothingElse(string key, bool known) =>
        Assert.Equal(known, SettingsCatalog.Default.Knows(key));

    [Fact]
    public void AnUnknownKeyIsNamedWithTheNearestKnownOne()
    {
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["OrleansPush:Topics:Namespaces:chat:HistroySize"] = "10",
            ["OrleansPush:Routing:Lease"] = "00:01:00",
            ["Logging:LogLevel:Default"] = "Warning",
        }).Build();

        var error = Assert.Throws<InvalidOperationException>(() => SettingsCatalog.ThrowIfUnknown(configuration));

        Assert.Contains("OrleansPush:Topics:Namespaces:chat:HistroySize is not a setting", error.Message, StringComparison.Ordinal);
        Assert.Contains("did you mean OrleansPush:Topics:Namespaces:chat:HistorySize?", error.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("Routing", error.Message, StringComparison.Ordinal);
    }

    /// <summary>Every options class of the deployed assemblies (a type with a <c>Section</c> constant under
    /// <c>OrleansPush:</c>), plus the two sections bound to something other than such a class.</summary>
    internal static IEnumerable<(string Section, Type Type)> OptionClasses()
    {
        Assembly[] assemblies = [typeof(ClusterSettings).Assembly, typeof(SettingsCatalog).Assembly, typeof(PushSilo).Assembly,
            typeof(GatewayHost).Assembly, typeof(SiloDashboardOptions).Assembly];
        foreach (var type in assemblies.SelectMany(a => a.GetTypes()))
        {
            if (type.GetField("Section", BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Static) is { IsLiteral: true } field
                && field.GetRawConstantValue() is string section && section.StartsWith(SettingsCatalog.Root + ":", StringComparison.Ordinal))
            {
                yield return (section, type);
            }
        }

        // A list of origins bound directly (OriginOptions), and Orleans' own failure-detection options (PushSilo).
        yield return (OriginOptions.Key, typeof(string[]));
        yield return (ClusterSettings.Section + ":Membership", typeof(Orleans.Configuration.ClusterMembershipOptions));
    }
}
