import { LocalEngineError } from '../pipeline/errors.js';

/** The fake partition, region and account a local run resolves CloudFormation tokens to. */
export const LOCAL_ENV = { partition: 'aws', region: 'local-1', account: '000000000000' } as const;

type Template = { Resources: Record<string, { Type: string; Properties?: Record<string, unknown> }> };

/** The Lambda ARN a local run gives a function of the template, by logical id. */
export const localFunctionArn = (logicalId: string) =>
  `arn:${LOCAL_ENV.partition}:lambda:${LOCAL_ENV.region}:${LOCAL_ENV.account}:function:${logicalId}`;

/**
 * Resolves the CloudFormation intrinsics a synthesized value uses (`Fn::Join`, `Ref`, `Fn::GetAtt`)
 * to local stand-ins: pseudo parameters to LOCAL_ENV, a function's Arn to its local ARN, any other
 * Ref or attribute to its logical id.
 */
export function resolveIntrinsics(value: unknown, template: Template): unknown {
  if (Array.isArray(value)) return value.map((v) => resolveIntrinsics(v, template));
  if (value === null || typeof value !== 'object') return value;
  const obj = value as Record<string, unknown>;
  if ('Fn::Join' in obj) {
    const [sep, parts] = obj['Fn::Join'] as [string, unknown[]];
    return parts.map((p) => String(resolveIntrinsics(p, template))).join(sep);
  }
  if ('Ref' in obj) {
    const ref = obj.Ref as string;
    if (ref === 'AWS::Partition') return LOCAL_ENV.partition;
    if (ref === 'AWS::Region') return LOCAL_ENV.region;
    if (ref === 'AWS::AccountId') return LOCAL_ENV.account;
    if (ref === 'AWS::URLSuffix') return 'amazonaws.com';
    return ref;
  }
  if ('Fn::GetAtt' in obj) {
    const [id, attr] = obj['Fn::GetAtt'] as [string, string];
    const type = template.Resources[id]?.Type;
    if (type === 'AWS::Lambda::Function' && attr === 'Arn') return localFunctionArn(id);
    return `${id}.${attr}`;
  }
  return Object.fromEntries(Object.entries(obj).map(([k, v]) => [k, resolveIntrinsics(v, template)]));
}

/** The Amazon States Language definition of a state machine in a synthesized template. */
export function definitionOf(template: Template, stateMachineLogicalId?: string): Record<string, unknown> {
  const machines = Object.entries(template.Resources).filter(
    ([, r]) => r.Type === 'AWS::StepFunctions::StateMachine',
  );
  const found = stateMachineLogicalId ? machines.find(([id]) => id === stateMachineLogicalId) : machines[0];
  if (!found) throw new LocalEngineError('the template has no state machine');
  const raw = resolveIntrinsics(found[1].Properties?.DefinitionString, template);
  return JSON.parse(typeof raw === 'string' ? raw : JSON.stringify(raw));
}
